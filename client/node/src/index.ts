/**
 * Node.js client for the iadb gRPC database gateway.
 *
 * The protocol is loaded at run time with `@grpc/proto-loader` (no
 * generated code) from the package's copy of the repository's
 * `proto/iadb/v1/database.proto` (`proto/` in the package, copied by the
 * build), and the standard `grpc.health.v1` protocol from the `health.proto`
 * shipped in the `grpc-health-check` package.
 *
 * Calls are retried with the Rust client's rules (see `RetryPolicy`): a
 * read on UNAVAILABLE, a write only when its request never left this
 * client, a commit never.
 *
 * Value mapping (wire `Value` kind -> JavaScript):
 *
 * | kind          | JavaScript                                                  |
 * |---------------|-------------------------------------------------------------|
 * | null / unset  | `null`                                                      |
 * | bool          | `boolean`                                                   |
 * | int (int64)   | `number` when it is a safe integer, else `bigint` (`int64: "bigint"`: always `bigint`) |
 * | double        | `number` (NaN and ±Infinity included)                       |
 * | text          | `string`                                                    |
 * | bytes         | `Buffer`                                                    |
 * | decimal       | `string` (exact digits)                                     |
 * | date, time, datetime, timestamp_tz | `string` as sent by the server (ISO 8601 / RFC 3339) |
 * | json          | the parsed document (`JSON.parse`)                          |
 */

import * as fs from "node:fs";
import * as path from "node:path";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { protoPath as healthProtoPath } from "grpc-health-check";
import type { Table } from "apache-arrow";

/** The gRPC status codes (`Status.INVALID_ARGUMENT`, ...). */
export const Status = grpc.status;
export type Status = grpc.status;

/** Metadata key under which the server sends the SQLSTATE / engine code. */
export const SQLSTATE_METADATA_KEY = "iadb-sqlstate";

/** Largest message sent or accepted, as the server's default limit. */
const DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024;

/** The package's root (this file is `dist/src/index.js` once compiled). */
const PACKAGE_ROOT = path.resolve(__dirname, "..", "..");

/**
 * The package's proto folder: `proto/iadb/v1/database.proto`, copied from
 * the repository's `proto/` by `npm run build` (and so by `npm pack`).
 */
export const DEFAULT_PROTO_DIR = path.join(PACKAGE_ROOT, "proto");

const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: true,
  longs: String,
  enums: String,
  bytes: Buffer,
  defaults: true,
  oneofs: true,
};

// ---------------------------------------------------------------------------
// Errors

/** Name of a gRPC status code ("INVALID_ARGUMENT"), or the number as text. */
export function statusName(code: number): string {
  const name = (grpc.status as unknown as Record<number, string | undefined>)[code];
  return typeof name === "string" ? name : String(code);
}

/**
 * A call the server (or the transport) answered with an error status.
 *
 * `code` is the gRPC status code (compare with `Status.INVALID_ARGUMENT`,
 * ...), `codeName` its name, `details` the server's message and `sqlstate`
 * the SQLSTATE or engine error code when the engine reported one.
 */
export class IadbError extends Error {
  readonly code: number;
  readonly codeName: string;
  readonly details: string;
  readonly sqlstate: string | undefined;
  /**
   * True when a transaction's commit was sent and no answer came back (the
   * connection was lost, the deadline passed, the server or its engine went
   * away): it may have been applied or not. Never `retryable`.
   */
  readonly commitOutcomeUnknown: boolean;
  /**
   * True when the request never left this client: no connection to the
   * server could be made, so nothing can have been applied and even a
   * write may be sent again.
   */
  readonly unsent: boolean;

  constructor(code: number, details: string, sqlstate?: string, commitOutcomeUnknown = false, unsent = false) {
    const codeName = statusName(code);
    super(`${codeName}: ${details}${sqlstate ? ` (sqlstate ${sqlstate})` : ""}`);
    this.name = "IadbError";
    this.code = code;
    this.codeName = codeName;
    this.details = details;
    this.sqlstate = sqlstate;
    this.commitOutcomeUnknown = commitOutcomeUnknown;
    this.unsent = unsent && !commitOutcomeUnknown;
  }

  /**
   * Whether the same call may succeed later (UNAVAILABLE). Safe to act on
   * for a read; a write answered UNAVAILABLE may have been committed unless
   * `unsent` is true. False for a commit whose outcome is unknown.
   */
  get retryable(): boolean {
    return this.code === grpc.status.UNAVAILABLE && !this.commitOutcomeUnknown;
  }

  /** The 0-based index of a batch's failing statement (`statement N: ...`). */
  get statementIndex(): number | undefined {
    const m = /^statement (\d+): /.exec(this.details);
    return m ? Number(m[1]) : undefined;
  }
}

/** Codes of a commit whose answer never came: it may have been applied. */
const COMMIT_UNKNOWN_CODES: ReadonlySet<number> = new Set([
  grpc.status.UNAVAILABLE,
  grpc.status.CANCELLED,
  grpc.status.DEADLINE_EXCEEDED,
  grpc.status.UNKNOWN,
  grpc.status.INTERNAL,
]);

/** The error that ended a commit, marked when its outcome is unknown. */
function commitError(e: unknown): unknown {
  if (e instanceof IadbError && COMMIT_UNKNOWN_CODES.has(e.code) && !e.commitOutcomeUnknown) {
    return new IadbError(
      e.code,
      `the commit's outcome is unknown (it may have been applied), so it is not retried: ${e.details}`,
      e.sqlstate,
      true,
    );
  }
  return e;
}

function isServiceError(e: unknown): e is grpc.ServiceError {
  return (
    typeof e === "object" &&
    e !== null &&
    typeof (e as { code?: unknown }).code === "number" &&
    "details" in e
  );
}

/** Any error of a call as an `IadbError` (client-side errors pass through). */
function toIadbError(e: unknown): unknown {
  if (e instanceof IadbError || !isServiceError(e)) {
    return e;
  }
  let sqlstate: string | undefined;
  const values = e.metadata?.get(SQLSTATE_METADATA_KEY) ?? [];
  if (values.length > 0) {
    const v = values[0];
    sqlstate = typeof v === "string" ? v : v.toString("utf8");
  }
  const details = e.details ?? e.message;
  // A tonic server answers its own deadline timer with CANCELLED "Timeout
  // expired", at the same instant as ours: either way the deadline passed.
  const code =
    e.code === grpc.status.CANCELLED && details === "Timeout expired" ? grpc.status.DEADLINE_EXCEEDED : e.code;
  return new IadbError(code, details, sqlstate);
}

// ---------------------------------------------------------------------------
// Retries

/**
 * How calls are retried, with the Rust client's rules: a read (`fetchAll`
 * before its first frame, `fetchOne`, `tableExists`, `health`,
 * `standardHealth`, a read-only `batch`, opening a transaction) is retried
 * on UNAVAILABLE. A write (`execute`, `executeMany`, `batch`, `migrate`) is
 * retried only when its request never left this client (no connection to
 * the server could be made: `IadbError.unsent`). Nothing inside a
 * transaction is retried, and its commit never is. Waits grow from
 * `initialDelayMs`, doubling up to `maxDelayMs`, each with up to as much
 * again of random jitter; a call's `timeoutMs` covers every attempt.
 */
export interface RetryPolicy {
  /** Retries after the first attempt (0: none). Default 3. */
  maxRetries: number;
  /** Wait before the first retry. Default 100 ms. */
  initialDelayMs: number;
  /** Longest wait between two attempts (before jitter). Default 2000 ms. */
  maxDelayMs: number;
  /**
   * Called (and awaited) before each retry with the error of the failed
   * attempt, the retry's number (1 for the first) and the wait before it.
   */
  onRetry?: (error: IadbError, retry: number, delayMs: number) => void | Promise<void>;
}

/** The Rust client's default: 3 retries from 100 ms, capped at 2 s. */
export const DEFAULT_RETRY: Readonly<RetryPolicy> = Object.freeze({ maxRetries: 3, initialDelayMs: 100, maxDelayMs: 2000 });

/** No retries. */
export const NO_RETRY: Readonly<RetryPolicy> = Object.freeze({ maxRetries: 0, initialDelayMs: 100, maxDelayMs: 2000 });

/**
 * What a call may do: `"read"` changes nothing (retried on UNAVAILABLE),
 * `"write"` may change data (retried only when its request was not sent).
 */
export type CallKind = "read" | "write";

function checkPolicy(policy: Partial<RetryPolicy> | undefined): RetryPolicy {
  const p: RetryPolicy = { ...DEFAULT_RETRY, ...(policy ?? {}) };
  for (const key of ["maxRetries", "initialDelayMs", "maxDelayMs"] as const) {
    const v = p[key];
    if (typeof v !== "number" || !Number.isInteger(v) || v < 0) {
      throw new RangeError(`retry.${key} must be a whole number >= 0, not ${String(v)}`);
    }
  }
  if (p.onRetry !== undefined && typeof p.onRetry !== "function") {
    throw new TypeError("retry.onRetry must be a function");
  }
  return p;
}

/**
 * Whether an attempt that failed with `e` may be made again, by the rules
 * of `RetryPolicy`: only UNAVAILABLE, for a write only when its request was
 * not sent, and never a commit whose outcome is unknown.
 */
export function mayRetry(e: unknown, kind: CallKind): e is IadbError {
  return (
    e instanceof IadbError &&
    e.code === grpc.status.UNAVAILABLE &&
    !e.commitOutcomeUnknown &&
    (kind === "read" || e.unsent)
  );
}

/** The attempts of one call: `again(e)` waits and says whether to retry. */
class Attempts {
  private retries = 0;

  constructor(
    private readonly policy: RetryPolicy,
    private readonly kind: CallKind,
    /** Date.now() by which every attempt must be over, if any. */
    readonly deadlineAt: number | undefined,
  ) {}

  async again(e: unknown): Promise<boolean> {
    if (!mayRetry(e, this.kind) || this.retries >= this.policy.maxRetries) {
      return false;
    }
    const base = Math.min(this.policy.initialDelayMs * 2 ** this.retries, this.policy.maxDelayMs);
    const delay = Math.round(base * (1 + Math.random()));
    if (this.deadlineAt !== undefined && Date.now() + delay >= this.deadlineAt) {
      return false;
    }
    this.retries++;
    await this.policy.onRetry?.(e, this.retries, delay);
    await new Promise((resolve) => setTimeout(resolve, delay));
    return true;
  }
}

/**
 * Runs `fn` again while its error may be retried by the rules of
 * `RetryPolicy`: on UNAVAILABLE, and for a write (`idempotent` false, the
 * default) only when the request never left the client. An error whose
 * commit outcome is unknown is never retried. Rejects with the last error.
 *
 * ```ts
 * await retry(() => db.transaction((tx) => ...));            // resent only if never sent
 * await retry(() => report(db), { idempotent: true });        // reads: any UNAVAILABLE
 * ```
 */
export async function retry<T>(
  fn: (attempt: number) => Promise<T>,
  options: Partial<RetryPolicy> & { idempotent?: boolean } = {},
): Promise<T> {
  const { idempotent, ...policy } = options;
  const attempts = new Attempts(checkPolicy(policy), idempotent === true ? "read" : "write", undefined);
  for (let attempt = 0; ; attempt++) {
    try {
      return await fn(attempt);
    } catch (e) {
      if (!(await attempts.again(e))) {
        throw e;
      }
    }
  }
}

// ---------------------------------------------------------------------------
// Values

/** A wire value kind. */
export type ValueKind =
  | "null"
  | "bool"
  | "int"
  | "double"
  | "text"
  | "bytes"
  | "decimal"
  | "date"
  | "time"
  | "datetime"
  | "timestamp_tz"
  | "json";

/** A parameter with an explicit wire kind; build one with `typed.*`. */
export class TypedValue {
  /** @internal use the `typed` helpers */
  constructor(
    readonly kind: ValueKind,
    readonly wire: Record<string, unknown>,
  ) {}
}

function checkInt64(v: bigint, what: string): string {
  if (v < -(2n ** 63n) || v > 2n ** 63n - 1n) {
    throw new RangeError(`${what}${v} is outside the int64 range; pass typed.decimal(...) for larger exact numbers`);
  }
  return v.toString();
}

/** Parameters with an explicit kind, for what plain JS values cannot say. */
export const typed = {
  /** An int64 (from a safe integer number, a bigint or decimal digits). */
  int(v: number | bigint | string): TypedValue {
    let b: bigint;
    if (typeof v === "number") {
      if (!Number.isSafeInteger(v)) {
        throw new RangeError(`typed.int: ${v} is not a safe integer; pass a bigint`);
      }
      b = BigInt(v);
    } else if (typeof v === "string") {
      if (!/^-?\d+$/.test(v)) {
        throw new TypeError(`typed.int: ${JSON.stringify(v)} is not an integer`);
      }
      b = BigInt(v);
    } else {
      b = v;
    }
    return new TypedValue("int", { int: checkInt64(b, "typed.int: ") });
  },
  /** A double, even for an integral number (`typed.double(3)`). */
  double(v: number): TypedValue {
    return new TypedValue("double", { double: v });
  },
  /** An exact decimal, as its digits ("12345678901234567890.5"). */
  decimal(v: string | number | bigint): TypedValue {
    return new TypedValue("decimal", { decimal: String(v) });
  },
  /** A calendar date "YYYY-MM-DD". */
  date(v: string): TypedValue {
    return new TypedValue("date", { date: v });
  },
  /** A time of day "HH:MM:SS[.fffffffff]". */
  time(v: string): TypedValue {
    return new TypedValue("time", { time: v });
  },
  /** A timestamp without zone "YYYY-MM-DDTHH:MM:SS[.fffffffff]". */
  datetime(v: string): TypedValue {
    return new TypedValue("datetime", { datetime: v });
  },
  /** A timestamp with zone: RFC 3339 text or a `Date`. */
  timestampTz(v: string | Date): TypedValue {
    return new TypedValue("timestamp_tz", { timestamp_tz: typeof v === "string" ? v : dateText(v) });
  },
  /** A JSON document: any JSON-serialisable value (serialised now). */
  json(v: unknown): TypedValue {
    const text = JSON.stringify(v);
    if (text === undefined) {
      throw new TypeError("typed.json: value is not JSON-serialisable");
    }
    return new TypedValue("json", { json: text });
  },
  /** Text (the same as passing a string). */
  text(v: string): TypedValue {
    return new TypedValue("text", { text: v });
  },
  /** Bytes (the same as passing a Buffer). */
  bytes(v: Uint8Array): TypedValue {
    return new TypedValue("bytes", { bytes: Buffer.from(v) });
  },
  /** SQL NULL (the same as passing null). */
  null(): TypedValue {
    return new TypedValue("null", { null: 0 });
  },
};

function dateText(d: Date): string {
  if (Number.isNaN(d.getTime())) {
    throw new RangeError("invalid Date");
  }
  return d.toISOString();
}

/**
 * A parameter for a `?` placeholder.
 *
 * `null`/`undefined` -> null, `boolean` -> bool, an integral `number` that is
 * a safe integer -> int, any other `number` -> double, `bigint` -> int
 * (int64 range), `string` -> text, `Buffer`/`Uint8Array` -> bytes, `Date` ->
 * timestamp_tz (UTC), `typed.*(...)` -> the kind it names.
 */
export type Param =
  | null
  | undefined
  | boolean
  | number
  | bigint
  | string
  | Uint8Array
  | Date
  | TypedValue;

/** The wire form of one parameter (`position` is 1-based, for messages). */
export function encodeValue(v: Param, position?: number): Record<string, unknown> {
  const where = position === undefined ? "" : `parameter ${position}: `;
  if (v === null || v === undefined) {
    return { null: 0 };
  }
  switch (typeof v) {
    case "boolean":
      return { bool: v };
    case "number":
      return Number.isSafeInteger(v) ? { int: String(v) } : { double: v };
    case "bigint":
      return { int: checkInt64(v, where) };
    case "string":
      return { text: v };
    default:
      break;
  }
  if (v instanceof TypedValue) {
    return v.wire;
  }
  if (v instanceof Uint8Array) {
    return { bytes: Buffer.isBuffer(v) ? v : Buffer.from(v.buffer, v.byteOffset, v.byteLength) };
  }
  if (v instanceof Date) {
    try {
      return { timestamp_tz: dateText(v) };
    } catch (e) {
      throw new RangeError(`${where}${(e as Error).message}`);
    }
  }
  const what = Array.isArray(v) ? "an array" : typeof v === "object" ? "an object" : typeof v;
  throw new TypeError(`${where}${what} is not a SQL value; wrap JSON documents in typed.json(...)`);
}

function encodeParams(params: readonly Param[] | undefined): Record<string, unknown>[] {
  if (params === undefined || params === null) {
    return [];
  }
  if (!Array.isArray(params)) {
    throw new TypeError("params must be an array of values for the `?` placeholders");
  }
  return params.map((p, i) => encodeValue(p, i + 1));
}

/** How int64 values are returned. */
export type Int64Mode = "auto" | "bigint";

/**
 * A decoded value: `null`, `boolean`, `number`, `bigint`, `string`, `Buffer`,
 * or for the json kind any parsed JSON value (hence `unknown`).
 */
export type SqlValue = unknown;

/** A row: values keyed by column name (a repeated name keeps the last value). */
export type Row = Record<string, SqlValue>;

/** A result column. */
export interface Column {
  /** The name as the engine reports it; may be empty or repeated. */
  name: string;
  /** The engine's declared type name, empty where it does not know it. */
  declaredType: string;
}

interface WireValue {
  kind?: string;
  [field: string]: unknown;
}

interface WireRow {
  values?: WireValue[];
}

interface WireColumn {
  name?: string;
  declared_type?: string;
}

function decodeInt(s: unknown, mode: Int64Mode): number | bigint {
  const text = String(s);
  if (mode === "bigint") {
    return BigInt(text);
  }
  const n = Number(text);
  return Number.isSafeInteger(n) ? n : BigInt(text);
}

/** One wire value as a JavaScript value (see the module's mapping table). */
export function decodeValue(v: WireValue | undefined, mode: Int64Mode = "auto"): SqlValue {
  if (v === undefined || v === null) {
    return null;
  }
  switch (v.kind) {
    case undefined:
    case "null":
      return null;
    case "int":
      return decodeInt(v.int, mode);
    case "text":
      return v.text as string;
    case "double":
      return v.double as number;
    case "bool":
      return v.bool as boolean;
    case "bytes":
      return v.bytes as Buffer;
    case "decimal":
    case "date":
    case "time":
    case "datetime":
    case "timestamp_tz":
      return v[v.kind] as string;
    case "json": {
      const text = v.json as string;
      try {
        return JSON.parse(text) as unknown;
      } catch (e) {
        throw new IadbError(grpc.status.INTERNAL, `json value from the server does not parse: ${(e as Error).message}`);
      }
    }
    default:
      throw new IadbError(grpc.status.INTERNAL, `unknown value kind ${JSON.stringify(v.kind)} from the server`);
  }
}

function decodeRow(names: readonly string[], row: WireRow, mode: Int64Mode): Row {
  const values = row.values ?? [];
  const out: Row = {};
  for (let i = 0; i < names.length; i++) {
    const name = names[i];
    const value = decodeValue(values[i], mode);
    if (name === "__proto__") {
      Object.defineProperty(out, name, { value, enumerable: true, writable: true, configurable: true });
    } else {
      out[name] = value;
    }
  }
  return out;
}

function decodeColumns(columns: WireColumn[] | undefined): Column[] {
  return (columns ?? []).map((c) => ({ name: c.name ?? "", declaredType: c.declared_type ?? "" }));
}

// ---------------------------------------------------------------------------
// Results

/** Per-call options. */
export interface CallOptions {
  /**
   * Time limit in milliseconds: sent as the server-side `timeout_ms`
   * (the query is stopped on the engine) and as the gRPC deadline, plus a
   * second's grace so that the server's DEADLINE_EXCEEDED arrives first.
   */
  timeoutMs?: number;
  /**
   * Run the call in a read-only transaction of its own on the server,
   * enforced by the engine: a write or DDL fails with PERMISSION_DENIED and
   * changes nothing (`QueryOptions.read_only`).
   */
  readOnly?: boolean;
  /**
   * Reads only (`fetchAll`, `fetchOne`): a read of bounded staleness, which
   * may run on a replica of the database whose replay lag is within this
   * many milliseconds (the primary when none is); it may then miss the last
   * `maxStalenessMs` of writes, the caller's own included. Unset: strong,
   * on the primary. Other calls always run on the primary.
   */
  maxStalenessMs?: number;
}

/** What `execute` returns. */
export interface ExecuteResult {
  rowsAffected: number | bigint;
  /** The id of the last inserted row where the engine has one. */
  lastInsertId?: number | bigint;
  executionTimeMs: number;
}

/** What `executeMany` returns. */
export interface ExecuteManyResult {
  rowsAffected: number | bigint;
  executionTimeMs: number;
}

/** The last frame of a FetchAll stream. */
export interface ResultSummary {
  rowCount: number | bigint;
  rowsAffected: number | bigint;
  executionTimeMs: number;
}

/** Health of one database (the iadb Health RPC). */
export interface DatabaseHealth {
  name: string;
  engine: string;
  healthy: boolean;
  /** Why it is unhealthy; empty when healthy. */
  message: string;
  poolSize: number;
  poolIdle: number;
  poolMax: number;
  latencyMs: number;
}

/** A standard health status. */
export type ServingStatus = "UNKNOWN" | "SERVING" | "NOT_SERVING" | "SERVICE_UNKNOWN";

/**
 * The rows of a FetchAll call, as an async iterable of plain objects.
 *
 * The call starts at the first `next()`, and frames are read as the rows are
 * consumed (gRPC flow control holds back the server), so a result of any
 * size streams in bounded memory. Leaving a `for await` loop early cancels
 * the call. `columns` is set once the header arrived, `summary` at the end.
 * One `RowStream` can be iterated once.
 */
export class RowStream implements AsyncIterable<Row> {
  /** The result's columns, once the header arrived. */
  columns: Column[] | undefined;
  /** The summary, once the stream ended successfully. */
  summary: ResultSummary | undefined;
  private started = false;

  /** @internal built by `IadbClient.fetchAll` */
  constructor(
    private readonly open: (deadlineAt: number | undefined) => grpc.ClientReadableStream<unknown>,
    private readonly mode: Int64Mode,
    private readonly attempts: () => Attempts,
  ) {}

  [Symbol.asyncIterator](): AsyncIterator<Row> {
    if (this.started) {
      throw new Error("a RowStream can be iterated once; call fetchAll again");
    }
    this.started = true;
    return this.rows();
  }

  /** Every row in an array (for results known to be small). */
  async toArray(): Promise<Row[]> {
    const rows: Row[] = [];
    for await (const row of this) {
      rows.push(row);
    }
    return rows;
  }

  /** Reads one attempt; retries a read that failed before its first frame. */
  private async *rows(): AsyncGenerator<Row, void, undefined> {
    const attempts = this.attempts();
    for (;;) {
      const seen = { frame: false };
      try {
        yield* this.read(this.open(attempts.deadlineAt), seen);
        return;
      } catch (e) {
        if (seen.frame || !(await attempts.again(e))) {
          throw e;
        }
      }
    }
  }

  private async *read(call: grpc.ClientReadableStream<unknown>, seen: { frame: boolean }): AsyncGenerator<Row, void, undefined> {
    let finished = false;
    let names: string[] | undefined;
    let count = 0;
    try {
      for await (const frame of call as AsyncIterable<Record<string, unknown>>) {
        seen.frame = true;
        switch (frame.frame) {
          case "header": {
            const header = frame.header as { columns?: WireColumn[] };
            this.columns = decodeColumns(header.columns);
            names = this.columns.map((c) => c.name);
            break;
          }
          case "batch": {
            if (names === undefined) {
              throw new IadbError(grpc.status.INTERNAL, "FetchAll: a row batch came before the header");
            }
            const batch = frame.batch as { rows?: WireRow[] };
            for (const row of batch.rows ?? []) {
              count++;
              yield decodeRow(names, row, this.mode);
            }
            break;
          }
          case "summary": {
            const s = frame.summary as Record<string, unknown>;
            this.summary = {
              rowCount: decodeInt(s.row_count, this.mode),
              rowsAffected: decodeInt(s.rows_affected, this.mode),
              executionTimeMs: Number(s.execution_time_ms ?? 0),
            };
            break;
          }
          default:
            break;
        }
      }
      finished = true;
    } catch (e) {
      throw toIadbError(e);
    } finally {
      if (!finished) {
        // Stopped early (break, throw or an error): end the call on the
        // server. Its CANCELLED status must not surface as an unhandled
        // 'error' event.
        call.on("error", () => {});
        call.cancel();
      }
    }
    if (this.summary === undefined) {
      throw new IadbError(grpc.status.INTERNAL, "FetchAll: the stream ended without its summary");
    }
    if (BigInt(this.summary.rowCount) !== BigInt(count)) {
      throw new IadbError(
        grpc.status.INTERNAL,
        `FetchAll: the summary counts ${this.summary.rowCount} rows but ${count} arrived`,
      );
    }
  }
}

// ---------------------------------------------------------------------------
// Arrow results

/** apache-arrow, loaded on the first Arrow result (it is a dependency). */
let arrowModule: typeof import("apache-arrow") | undefined;
function arrow(): typeof import("apache-arrow") {
  arrowModule ??= require("apache-arrow") as typeof import("apache-arrow");
  return arrowModule;
}

/**
 * Follows one Arrow result (`result_format = RESULT_FORMAT_ARROW`): the
 * header, ArrowData frames whose `ipc` bytes concatenated are one Arrow IPC
 * stream, then the summary. The rows the frames announce, the summary's
 * count and the rows decoded must agree: a result cut short or miscounted
 * is INTERNAL, never a short table.
 * @internal
 */
class ArrowCollector {
  columns: Column[] | undefined;
  summary: ResultSummary | undefined;
  private chunks: Buffer[] = [];
  private announced = 0n;

  constructor(
    private readonly what: string,
    private readonly mode: Int64Mode,
  ) {}

  private broken(message: string): IadbError {
    return new IadbError(grpc.status.INTERNAL, `${this.what}: ${message}`);
  }

  get done(): boolean {
    return this.summary !== undefined;
  }

  feed(frame: Record<string, unknown>): void {
    if (this.summary !== undefined) {
      throw this.broken("a frame came after the summary");
    }
    switch (frame.frame) {
      case "header":
        if (this.columns !== undefined) {
          throw this.broken("a second header");
        }
        this.columns = decodeColumns((frame.header as { columns?: WireColumn[] }).columns);
        break;
      case "arrow": {
        if (this.columns === undefined) {
          throw this.broken("Arrow data came before the header");
        }
        const data = frame.arrow as { ipc?: Buffer; rows?: string | number };
        this.chunks.push(data.ipc ?? Buffer.alloc(0));
        this.announced += BigInt(data.rows ?? 0);
        break;
      }
      case "batch":
        throw this.broken(
          "the server sent rows (RowBatch) for an Arrow result; a server that predates Arrow results ignores result_format: upgrade iadb-server",
        );
      case "summary": {
        if (this.columns === undefined) {
          throw this.broken("the summary came before the header");
        }
        const s = frame.summary as Record<string, unknown>;
        const count = BigInt(String(s.row_count ?? "0"));
        if (count !== this.announced) {
          throw this.broken(`the summary counts ${count} rows but ${this.announced} arrived`);
        }
        this.summary = {
          rowCount: decodeInt(s.row_count, this.mode),
          rowsAffected: decodeInt(s.rows_affected, this.mode),
          executionTimeMs: Number(s.execution_time_ms ?? 0),
        };
        break;
      }
      default:
        break;
    }
  }

  /** The decoded table, once the stream ended; throws for an incomplete one. */
  table(): Table {
    if (this.columns === undefined) {
      throw this.broken("the stream ended without a header");
    }
    if (this.summary === undefined) {
      throw this.broken(`the stream ended after ${this.announced} rows without its summary, so the result may be incomplete`);
    }
    const { tableFromIPC, Table } = arrow();
    if (this.chunks.length === 0) {
      if (this.columns.length > 0) {
        throw this.broken(
          `${this.columns.length} columns but no Arrow data; a server that predates Arrow results ignores result_format: upgrade iadb-server`,
        );
      }
      return new Table();
    }
    const bytes = this.chunks.length === 1 ? this.chunks[0] : Buffer.concat(this.chunks);
    this.chunks = [];
    let table: Table;
    try {
      table = tableFromIPC(bytes);
    } catch (e) {
      throw this.broken(`its Arrow data does not decode: ${(e as Error).message}`);
    }
    if (BigInt(table.numRows) !== BigInt(this.summary.rowCount)) {
      throw this.broken(`its Arrow data holds ${table.numRows} rows but its summary counts ${this.summary.rowCount}`);
    }
    if (table.numCols !== this.columns.length) {
      throw this.broken(`its Arrow schema has ${table.numCols} columns but its header ${this.columns.length}`);
    }
    return table;
  }
}

function executeResult(res: Record<string, unknown>, mode: Int64Mode): ExecuteResult {
  const result: ExecuteResult = {
    rowsAffected: decodeInt(res.rows_affected ?? "0", mode),
    executionTimeMs: Number(res.execution_time_ms ?? 0),
  };
  if (res._last_insert_id === "last_insert_id" && res.last_insert_id !== undefined) {
    result.lastInsertId = decodeInt(res.last_insert_id, mode);
  }
  return result;
}

// ---------------------------------------------------------------------------
// Batches and transactions

/** One statement of a batch: SQL, `[sql, params]` or `{ sql, params }`. */
export type BatchStatement = string | readonly [string, (readonly Param[])?] | { sql: string; params?: readonly Param[] };

/** What one statement of a batch did. */
export interface StatementResult {
  rowsAffected: number | bigint;
  /** The id of the last inserted row where the engine has one. */
  lastInsertId?: number | bigint;
  /** The columns of a statement that returns rows (else empty). */
  columns: Column[];
  /** Its rows (else empty). */
  rows: Row[];
}

/** Options of `batch`. */
export interface BatchOptions extends CallOptions {
  /** A read-only transaction: a statement that writes fails. */
  readOnly?: boolean;
}

/** Isolation levels; each engine accepts the ones it has. */
export type IsolationLevel = "read_committed" | "repeatable_read" | "serializable" | "snapshot";

const ISOLATION_WIRE: Record<IsolationLevel, string> = {
  read_committed: "ISOLATION_LEVEL_READ_COMMITTED",
  repeatable_read: "ISOLATION_LEVEL_REPEATABLE_READ",
  serializable: "ISOLATION_LEVEL_SERIALIZABLE",
  snapshot: "ISOLATION_LEVEL_SNAPSHOT",
};

/** Options of `transaction`. */
export interface TransactionOptions {
  /** Absent: the engine's default. */
  isolation?: IsolationLevel;
  /** A read-only transaction: a statement that writes fails. */
  readOnly?: boolean;
  /** SQLite only: BEGIN IMMEDIATE (take the write lock at once). */
  immediate?: boolean;
  /** Deadline of the whole transaction, in milliseconds (default none; the server's limits apply). */
  timeoutMs?: number;
  /**
   * With `readOnly`: the transaction may run on a replica whose replay lag
   * is within this many milliseconds (bounded staleness), as for
   * `CallOptions.maxStalenessMs`. Ignored for a transaction that may write.
   */
  maxStalenessMs?: number;
}

/** The wire fields of a bounded-staleness read (none for `undefined`). */
function stalenessFields(ms: number | undefined): Record<string, unknown> {
  if (ms === undefined) {
    return {};
  }
  if (!Number.isInteger(ms) || ms < 0 || ms > 0xffffffff) {
    throw new RangeError(`maxStalenessMs must be a whole number of milliseconds below 2^32, not ${ms}`);
  }
  return { consistency: "READ_CONSISTENCY_BOUNDED_STALENESS", max_staleness_ms: ms };
}

function encodeStatement(item: BatchStatement, index: number): Record<string, unknown> {
  let sql: unknown;
  let params: readonly Param[] | undefined;
  if (typeof item === "string") {
    sql = item;
  } else if (Array.isArray(item)) {
    [sql, params] = item as readonly [string, (readonly Param[])?];
  } else if (typeof item === "object" && item !== null) {
    ({ sql, params } = item as { sql: string; params?: readonly Param[] });
  }
  if (typeof sql !== "string") {
    throw new TypeError(`statement ${index}: a statement is SQL text, [sql, params] or { sql, params }`);
  }
  try {
    return { sql, params: encodeParams(params) };
  } catch (e) {
    if (e instanceof TypeError || e instanceof RangeError) {
      e.message = `statement ${index}: ${e.message}`;
    }
    throw e;
  }
}

function checkFlag(name: string, v: unknown): boolean {
  if (v === undefined) {
    return false;
  }
  if (typeof v !== "boolean") {
    throw new TypeError(`${name} must be a boolean`);
  }
  return v;
}

type Frames = AsyncIterator<Record<string, unknown>>;

/**
 * The rows of one fetch inside a transaction (`for await`), read from the
 * transaction's stream as they are consumed. A transaction answers one
 * request at a time: read the rows (or leave the loop, which reads and
 * discards the rest) before its next request. A request sent before they
 * were read discards them, and the iteration then throws.
 */
export class TxRowStream implements AsyncIterable<Row> {
  /** The result's columns, once the header arrived. */
  columns: Column[] | undefined;
  /** The summary, once every row was read. */
  summary: ResultSummary | undefined;
  private started = false;
  /** @internal */
  finished = false;
  /** @internal */
  discarded = false;

  /** @internal built by `Transaction.fetchAll` */
  constructor(
    private readonly tx: Transaction,
    private readonly request: Record<string, unknown>,
    private readonly mode: Int64Mode,
  ) {}

  [Symbol.asyncIterator](): AsyncIterator<Row> {
    if (this.started) {
      throw new Error("a TxRowStream can be iterated once; call fetchAll again");
    }
    this.started = true;
    return this.rows();
  }

  /** Every row in an array. */
  async toArray(): Promise<Row[]> {
    const rows: Row[] = [];
    for await (const row of this) {
      rows.push(row);
    }
    return rows;
  }

  private gone(): Error {
    return new Error("these rows were discarded: the transaction's next request was sent before they were read");
  }

  /** @internal the next `fetched` frame */
  async frame(): Promise<Record<string, unknown>> {
    const res = await this.tx.read("fetched");
    const frame = res.fetched as Record<string, unknown>;
    if (frame.frame === "summary") {
      this.finished = true;
      this.tx.pending = undefined;
    }
    return frame;
  }

  private draining: Promise<void> | undefined;

  /** @internal reads and drops the frames not read yet (once, whoever asks) */
  drain(): Promise<void> {
    this.draining ??= (async () => {
      while (!this.finished) {
        await this.frame();
      }
    })();
    return this.draining;
  }

  private async *rows(): AsyncGenerator<Row, void, undefined> {
    await this.tx.send(this.request, this);
    let names: string[] | undefined;
    let count = 0;
    try {
      while (!this.finished) {
        if (this.discarded) {
          throw this.gone();
        }
        const frame = await this.frame();
        switch (frame.frame) {
          case "header":
            this.columns = decodeColumns((frame.header as { columns?: WireColumn[] }).columns);
            names = this.columns.map((c) => c.name);
            break;
          case "batch":
            if (names === undefined) {
              throw this.tx.fail(new IadbError(grpc.status.INTERNAL, "Transaction: a row batch came before the header"));
            }
            for (const row of (frame.batch as { rows?: WireRow[] }).rows ?? []) {
              count++;
              yield decodeRow(names, row, this.mode);
              if (this.discarded) {
                throw this.gone();
              }
            }
            break;
          case "summary": {
            const s = frame.summary as Record<string, unknown>;
            this.summary = {
              rowCount: decodeInt(s.row_count, this.mode),
              rowsAffected: decodeInt(s.rows_affected, this.mode),
              executionTimeMs: Number(s.execution_time_ms ?? 0),
            };
            break;
          }
          default:
            break;
        }
      }
    } finally {
      // Left early: the rest of the result is read and dropped, so that
      // the transaction can go on.
      if (!this.finished && !this.discarded && this.tx.isOpen) {
        this.discarded = true;
        await this.drain();
      }
    }
    if (this.summary !== undefined && BigInt(this.summary.rowCount) !== BigInt(count)) {
      throw this.tx.fail(
        new IadbError(grpc.status.INTERNAL, `Transaction: the summary counts ${this.summary.rowCount} rows but ${count} arrived`),
      );
    }
  }
}

/**
 * One interactive transaction: the `tx` of `client.transaction(async (tx) => ...)`.
 *
 * Requests are answered one at a time, in order (calls made together wait
 * for each other). Any error from the server ends the transaction: the
 * server rolls it back, and every later request rejects with that error.
 */
export class Transaction {
  /** The database's configured name and its engine. */
  database = "";
  engine = "";
  /** True once committed, false once rolled back, undefined while open. */
  committed: boolean | undefined;
  /** @internal an unfinished fetch */
  pending: TxRowStream | undefined;
  private error: unknown;
  private ended = false;
  private tail: Promise<unknown> = Promise.resolve();

  /** @internal built by `IadbClient.transaction` */
  constructor(
    private readonly call: grpc.ClientDuplexStream<unknown, unknown>,
    private readonly frames: Frames,
    private readonly mode: Int64Mode,
  ) {
    // Errors reach the reader; a cancelled call must not surface as an
    // unhandled 'error' event.
    call.on("error", () => {});
  }

  /** Whether requests may still be sent. */
  get isOpen(): boolean {
    return !this.ended && this.error === undefined;
  }

  /** @internal the error that ended it, if any */
  get failure(): unknown {
    return this.error;
  }

  /** @internal ends the transaction with `e` (the server rolled it back) */
  fail(e: unknown): unknown {
    if (this.error === undefined) {
      this.error = e;
    }
    this.ended = true;
    this.committed = e instanceof IadbError && e.commitOutcomeUnknown ? undefined : false;
    this.call.cancel();
    return e;
  }

  private checkOpen(): void {
    if (this.error !== undefined) {
      throw this.error;
    }
    if (this.ended) {
      throw new Error(`the transaction has ended (${this.committed ? "committed" : "rolled back"})`);
    }
  }

  /** One request at a time: `fn` runs after every earlier one. */
  private turn<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.tail.then(fn);
    this.tail = run.catch(() => {});
    return run;
  }

  /** @internal the next response, which must be `kind` */
  async read(kind: string): Promise<Record<string, unknown>> {
    let next: IteratorResult<Record<string, unknown>>;
    try {
      next = await this.frames.next();
    } catch (e) {
      throw this.fail(toIadbError(e));
    }
    if (next.done) {
      throw this.fail(new IadbError(grpc.status.INTERNAL, "Transaction: the stream ended before the answer to a request"));
    }
    if (next.value.response !== kind) {
      throw this.fail(
        new IadbError(grpc.status.INTERNAL, `Transaction: expected \`${kind}\`, got \`${String(next.value.response)}\``),
      );
    }
    return next.value;
  }

  /** @internal the first answer */
  async begun(): Promise<void> {
    const res = await this.read("begun");
    const begun = res.begun as { database?: string; engine?: string };
    this.database = begun.database ?? "";
    this.engine = begun.engine ?? "";
  }

  private async settle(): Promise<void> {
    const pending = this.pending;
    if (pending !== undefined) {
      pending.discarded = true;
      await pending.drain();
      this.pending = undefined;
    }
  }

  /** @internal sends `request` in turn (a fetch registers its stream) */
  send(request: Record<string, unknown>, stream?: TxRowStream): Promise<void> {
    return this.turn(async () => {
      await this.settle();
      this.checkOpen();
      this.call.write(request);
      this.pending = stream;
    });
  }

  private exchange(request: Record<string, unknown>, kind: string): Promise<Record<string, unknown>> {
    return this.turn(async () => {
      await this.settle();
      this.checkOpen();
      this.call.write(request);
      return this.read(kind);
    });
  }

  /** Runs one statement that returns no rows. */
  async execute(sql: string, params?: readonly Param[]): Promise<ExecuteResult> {
    const request = { execute: { sql, params: encodeParams(params) } };
    const res = await this.exchange(request, "executed");
    return executeResult(res.executed as Record<string, unknown>, this.mode);
  }

  /** Runs one statement once per parameter list. */
  async executeMany(sql: string, paramSets: readonly (readonly Param[])[]): Promise<ExecuteManyResult> {
    if (!Array.isArray(paramSets)) {
      throw new TypeError("paramSets must be an array of parameter arrays");
    }
    const request = { execute_many: { sql, param_sets: paramSets.map((set) => ({ values: encodeParams(set) })) } };
    const res = (await this.exchange(request, "executed_many")).executed_many as Record<string, unknown>;
    return {
      rowsAffected: decodeInt(res.rows_affected ?? "0", this.mode),
      executionTimeMs: Number(res.execution_time_ms ?? 0),
    };
  }

  /** Streams a result (`for await`, or `.toArray()`). */
  fetchAll(sql: string, params?: readonly Param[]): TxRowStream {
    return new TxRowStream(this, { fetch: { sql, params: encodeParams(params) } }, this.mode);
  }

  /**
   * Every row of a query as an apache-arrow `Table`, sent by the server as
   * Arrow IPC (`result_format = ARROW`). int64 columns hold `bigint`s,
   * timestamps numbers (see docs/arrow.md for each engine's types).
   */
  fetchArrow(sql: string, params?: readonly Param[]): Promise<Table> {
    const request = { fetch: { sql, params: encodeParams(params), result_format: "RESULT_FORMAT_ARROW" } };
    return this.turn(async () => {
      await this.settle();
      this.checkOpen();
      this.call.write(request);
      const collector = new ArrowCollector("Transaction", this.mode);
      while (!collector.done) {
        const res = await this.read("fetched");
        try {
          collector.feed(res.fetched as Record<string, unknown>);
        } catch (e) {
          throw this.fail(e);
        }
      }
      try {
        return collector.table();
      } catch (e) {
        throw this.fail(e);
      }
    });
  }

  /** The first row, or `null`; the rest of the result is read and dropped. */
  async fetchOne(sql: string, params?: readonly Param[]): Promise<Row | null> {
    for await (const row of this.fetchAll(sql, params)) {
      return row;
    }
    return null;
  }

  /**
   * Commits and ends the transaction. An error whose answer never came has
   * `commitOutcomeUnknown` set: the commit may have been applied.
   */
  commit(): Promise<void> {
    return this.turn(async () => {
      await this.settle();
      this.checkOpen();
      this.call.write({ commit: {} });
      let res: Record<string, unknown>;
      try {
        res = await this.read("ended");
      } catch (e) {
        this.error = commitError(e);
        this.committed = this.error instanceof IadbError && this.error.commitOutcomeUnknown ? undefined : false;
        throw this.error;
      }
      if ((res.ended as { committed?: boolean }).committed !== true) {
        throw this.fail(commitError(new IadbError(grpc.status.INTERNAL, "Transaction: the commit was answered `rolled back`")));
      }
      await this.close(true);
    });
  }

  /** Rolls back and ends the transaction (nothing to do once an error did). */
  rollback(): Promise<void> {
    return this.turn(async () => {
      if (this.error !== undefined && !(this.error instanceof IadbError && this.error.commitOutcomeUnknown)) {
        return;
      }
      this.checkOpen();
      if (this.pending !== undefined) {
        // The rows still coming are not wanted: the call is cancelled, and
        // the server rolls back a transaction whose stream breaks.
        this.pending.discarded = true;
        this.ended = true;
        this.committed = false;
        this.call.cancel();
        return;
      }
      this.call.write({ rollback: {} });
      await this.read("ended");
      await this.close(false);
    });
  }

  /** After `ended`: half-closes and reads the end of the stream. */
  private async close(committed: boolean): Promise<void> {
    this.ended = true;
    this.committed = committed;
    this.call.end();
    try {
      while (!(await this.frames.next()).done) {
        // Nothing follows `ended`.
      }
    } catch {
      // The transaction ended as answered; the status after it does not change that.
    }
  }

  /** @internal after the callback threw: rolls back, never throws */
  async abandon(): Promise<void> {
    if (this.isOpen) {
      try {
        await this.rollback();
      } catch {
        // The server rolls back when the stream breaks.
      }
    }
    this.call.cancel();
  }

  /** @internal after the callback resolved: commits, or throws what ended it */
  async finish(): Promise<void> {
    await this.tail;
    if (this.error !== undefined) {
      throw this.error;
    }
    if (!this.ended) {
      await this.commit();
    }
  }
}

// ---------------------------------------------------------------------------
// The client

/** Options of `IadbClient.connect`. */
export interface ConnectOptions {
  /** The server's database name; empty or absent: its default database. */
  database?: string;
  /** How int64 values come back: "auto" (default) or "bigint". */
  int64?: Int64Mode;
  /** Credentials; default insecure, or TLS for an `https://` address. */
  credentials?: grpc.ChannelCredentials;
  /**
   * Bearer token for a server with a tokens file: sent with every call as
   * `authorization: Bearer <token>`.
   */
  token?: string;
  /** How long `connect` waits for the channel (default 10000 ms). */
  connectTimeoutMs?: number;
  /** Largest message sent or received (default 64 MiB, as the server). */
  maxMessageBytes?: number;
  /** Folder holding `iadb/v1/database.proto` (default: the package's `proto/`). */
  protoDir?: string;
  /**
   * How calls are retried (see `RetryPolicy`); default `DEFAULT_RETRY`
   * (3 retries from 100 ms, capped at 2 s). `{ maxRetries: 0 }` or
   * `NO_RETRY` turns retries off.
   */
  retry?: Partial<RetryPolicy>;
  /**
   * grpc-js channel options, over this client's defaults (the message
   * limits, and reconnection after a lost connection from 100 ms, backing
   * off to at most 5 s).
   */
  channelOptions?: grpc.ChannelOptions;
}

/** Options of `migrate`. */
export interface MigrateOptions {
  /** Target version for apply, rollback and baseline; absent: the newest. */
  targetVersion?: string;
  /**
   * Folders of app migrations (`V{version}__{name}.sql` and
   * `U{version}__{name}.sql`; other files are ignored), sent with the
   * request.
   */
  paths?: string | readonly string[];
  /** App migrations as `{ filename: sql }`, `[filename, sql]` pairs or `{ filename, content }`. */
  files?:
    | Readonly<Record<string, string>>
    | readonly (readonly [string, string] | { filename: string; content: string })[];
  /** Apply even when applied migrations have no file any more. */
  allowMissing?: boolean;
  /** Apply a pending migration older than the newest applied one. */
  allowOutOfOrder?: boolean;
  /** gRPC deadline of the call, in milliseconds (every retry included). */
  timeoutMs?: number;
}

/** The actions of the Migrate RPC. */
export type MigrateAction = "status" | "plan" | "apply" | "rollback" | "validate" | "repair" | "baseline";

const MIGRATE_ACTIONS: readonly MigrateAction[] = ["status", "plan", "apply", "rollback", "validate", "repair", "baseline"];

/** One migration as the server reports it. */
export interface MigrationStatus {
  version: string;
  description: string;
  /** "system" or "app". */
  migrationType: string;
  filename: string;
  /** "applied", "pending" or "failed". */
  state: string;
  /** When it was applied (RFC 3339); empty when not applied. */
  appliedAt: string;
  checksum: string;
  checksumOk: boolean;
  /** Its SQL (for `plan`). */
  sql: string;
}

/** What `migrate` resolves to. */
export interface MigrateResult {
  /** Every known migration (system and app). */
  migrations: MigrationStatus[];
  /** The files this call applied, rolled back or changed. */
  changed: string[];
  executionTimeMs: number;
  /** `migrations` whose state is "pending". */
  pending: MigrationStatus[];
  /** `migrations` whose state is "applied". */
  applied: MigrationStatus[];
}

/** A file name the server takes as a migration. */
const MIGRATION_FILE = /^[VU][0-9][^_]*__.+\.sql$/;

/** The migration files of `folders`, in name order. */
function migrationFiles(folders: string | readonly string[] | undefined): { filename: string; content: string }[] {
  if (folders === undefined) {
    return [];
  }
  const out: { filename: string; content: string }[] = [];
  for (const folder of typeof folders === "string" ? [folders] : folders) {
    if (typeof folder !== "string") {
      throw new TypeError("paths must be a folder or an array of folders");
    }
    if (!fs.statSync(folder, { throwIfNoEntry: false })?.isDirectory()) {
      const e = new Error(`migration folder ${JSON.stringify(folder)} does not exist`) as NodeJS.ErrnoException;
      e.code = "ENOENT";
      throw e;
    }
    for (const name of fs.readdirSync(folder).sort()) {
      if (MIGRATION_FILE.test(name)) {
        out.push({ filename: name, content: fs.readFileSync(path.join(folder, name), "utf8") });
      }
    }
  }
  return out;
}

function sentFiles(files: MigrateOptions["files"]): { filename: string; content: string }[] {
  if (files === undefined) {
    return [];
  }
  const items: unknown[] = Array.isArray(files) ? files : Object.entries(files as Record<string, string>);
  return items.map((item, i) => {
    let filename: unknown;
    let content: unknown;
    if (Array.isArray(item)) {
      [filename, content] = item as unknown[];
    } else if (typeof item === "object" && item !== null) {
      ({ filename, content } = item as { filename: unknown; content: unknown });
    }
    if (typeof filename !== "string" || typeof content !== "string") {
      throw new TypeError(`files[${i}]: a migration file is [filename, sql] or { filename, content } (strings)`);
    }
    return { filename, content };
  });
}

function migrationStatus(m: Record<string, unknown>): MigrationStatus {
  return {
    version: String(m.version ?? ""),
    description: String(m.description ?? ""),
    migrationType: String(m.migration_type ?? ""),
    filename: String(m.filename ?? ""),
    state: String(m.state ?? ""),
    appliedAt: String(m.applied_at ?? ""),
    checksum: String(m.checksum ?? ""),
    checksumOk: m.checksum_ok === true,
    sql: String(m.sql ?? ""),
  };
}

type UnaryCallback = (err: grpc.ServiceError | null, res?: unknown) => void;
type UnaryMethod = (req: unknown, metadata: grpc.Metadata, options: grpc.CallOptions, cb: UnaryCallback) => void;

const packageCache = new Map<string, grpc.GrpcObject>();

function loadPackage(protoDir: string): grpc.GrpcObject {
  const cached = packageCache.get(protoDir);
  if (cached !== undefined) {
    return cached;
  }
  const proto = path.join(protoDir, "iadb", "v1", "database.proto");
  if (!fs.existsSync(proto)) {
    throw new Error(
      `${proto} does not exist: pass protoDir (a folder holding iadb/v1/database.proto) to IadbClient.connect, ` +
        "or build the package (`npm run build` copies the repository's proto/)",
    );
  }
  const definition = protoLoader.loadSync(["iadb/v1/database.proto", path.basename(healthProtoPath)], {
    ...LOADER_OPTIONS,
    includeDirs: [protoDir, path.dirname(healthProtoPath)],
  });
  const pkg = grpc.loadPackageDefinition(definition);
  packageCache.set(protoDir, pkg);
  return pkg;
}

function lookupService(pkg: grpc.GrpcObject, dotted: string): grpc.ServiceClientConstructor {
  let node: unknown = pkg;
  for (const part of dotted.split(".")) {
    node = (node as Record<string, unknown> | undefined)?.[part];
  }
  if (typeof node !== "function") {
    throw new Error(`service ${dotted} is not in the loaded protos`);
  }
  return node as grpc.ServiceClientConstructor;
}

/** `host:port` from an address that may carry an `http(s)://` scheme. */
function parseAddress(address: string): { target: string; tls: boolean } {
  const m = /^(https?):\/\/([^/]+)\/?$/i.exec(address.trim());
  if (m) {
    return { target: m[2], tls: m[1].toLowerCase() === "https" };
  }
  return { target: address.trim(), tls: false };
}

/** The channel and stubs that clients made by `withRetry` share. */
interface Channel {
  stub: grpc.Client;
  healthStub: grpc.Client;
  target: string;
  connectTimeoutMs: number;
}

/** A client of one iadb server and one of its databases. */
export class IadbClient {
  /** The database every call names ("" is the server's default). */
  readonly database: string;
  /** How this client retries calls. */
  readonly retryPolicy: Readonly<RetryPolicy>;
  private readonly channel: Channel;
  private readonly stub: grpc.Client;
  private readonly healthStub: grpc.Client;
  private readonly mode: Int64Mode;
  private readonly token: string | undefined;

  private constructor(
    channel: Channel,
    database: string,
    mode: Int64Mode,
    token: string | undefined,
    policy: RetryPolicy,
  ) {
    this.channel = channel;
    this.stub = channel.stub;
    this.healthStub = channel.healthStub;
    this.database = database;
    this.mode = mode;
    this.token = token;
    this.retryPolicy = Object.freeze({ ...policy });
  }

  /**
   * A client on the same channel (and database) that retries with
   * `policy` (merged over `DEFAULT_RETRY`). Closing either closes both.
   */
  withRetry(policy: Partial<RetryPolicy>): IadbClient {
    return new IadbClient(this.channel, this.database, this.mode, this.token, checkPolicy(policy));
  }

  /** The metadata of every call: the bearer token, when there is one. */
  private metadata(): grpc.Metadata {
    const metadata = new grpc.Metadata();
    if (this.token !== undefined) {
      metadata.set("authorization", `Bearer ${this.token}`);
    }
    return metadata;
  }

  /**
   * Connects to `address` ("127.0.0.1:50051", "http://127.0.0.1:50051",
   * "https://db.example:443" or any gRPC target) and waits until the channel
   * is ready; rejects with UNAVAILABLE when it is not ready in time.
   */
  static async connect(address: string, options: ConnectOptions = {}): Promise<IadbClient> {
    const mode = options.int64 ?? "auto";
    if (mode !== "auto" && mode !== "bigint") {
      throw new TypeError(`int64 must be "auto" or "bigint", not ${JSON.stringify(mode)}`);
    }
    const token = options.token?.trim();
    if (options.token !== undefined && (typeof options.token !== "string" || !token)) {
      throw new TypeError("token must be a non-empty string");
    }
    const policy = checkPolicy(options.retry);
    const pkg = loadPackage(options.protoDir ?? DEFAULT_PROTO_DIR);
    const Database = lookupService(pkg, "iadb.v1.Database");
    const Health = lookupService(pkg, "grpc.health.v1.Health");
    const { target, tls } = parseAddress(address);
    const credentials =
      options.credentials ?? (tls ? grpc.credentials.createSsl() : grpc.credentials.createInsecure());
    const max = options.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES;
    const stub = new Database(target, credentials, {
      "grpc.max_receive_message_length": max,
      "grpc.max_send_message_length": max,
      // A lost server is looked for again soon (grpc-js starts at 1 s and
      // backs off to 2 min), so that a retry can find it back.
      "grpc.initial_reconnect_backoff_ms": 100,
      "grpc.max_reconnect_backoff_ms": 5000,
      ...(options.channelOptions ?? {}),
    });
    // The health client shares the same channel (one connection).
    const healthStub = new Health(target, credentials, { channelOverride: stub.getChannel() });
    const timeout = options.connectTimeoutMs ?? 10_000;
    try {
      await new Promise<void>((resolve, reject) => {
        stub.waitForReady(Date.now() + timeout, (err) => (err ? reject(err) : resolve()));
      });
    } catch (e) {
      stub.close();
      throw new IadbError(
        grpc.status.UNAVAILABLE,
        `cannot connect to ${target} within ${timeout} ms: ${(e as Error).message}`,
      );
    }
    return new IadbClient(
      { stub, healthStub, target, connectTimeoutMs: timeout },
      options.database ?? "",
      mode,
      token,
      policy,
    );
  }

  /**
   * Waits until the channel is connected (it reconnects by itself after a
   * lost connection); rejects with UNAVAILABLE after `timeoutMs`.
   */
  async waitForReady(timeoutMs = this.channel.connectTimeoutMs): Promise<void> {
    try {
      await new Promise<void>((resolve, reject) => {
        this.stub.waitForReady(Date.now() + timeoutMs, (err) => (err ? reject(err) : resolve()));
      });
    } catch (e) {
      throw new IadbError(
        grpc.status.UNAVAILABLE,
        `not connected to ${this.channel.target} within ${timeoutMs} ms: ${(e as Error).message}`,
      );
    }
  }

  /**
   * Before a write is sent: the channel must be connected. When it is not
   * (the server cannot be reached), the request is not sent and the error
   * is marked `unsent`, so that the write may be retried. A write sent
   * and then answered UNAVAILABLE is never marked.
   */
  private async sendable(deadlineAt: number | undefined): Promise<void> {
    const channel = this.stub.getChannel();
    const limit = Math.min(deadlineAt ?? Infinity, Date.now() + this.channel.connectTimeoutMs);
    let state = channel.getConnectivityState(true);
    // IDLE -> CONNECTING -> READY or TRANSIENT_FAILURE: a few changes at most.
    for (let i = 0; i < 8; i++) {
      if (state === grpc.connectivityState.READY || state === grpc.connectivityState.SHUTDOWN) {
        return; // SHUTDOWN: the call reports the closed client
      }
      if (state === grpc.connectivityState.TRANSIENT_FAILURE || Date.now() >= limit) {
        break;
      }
      const from = state;
      const changed = await new Promise<boolean>((resolve) => {
        channel.watchConnectivityState(from, limit, (err) => resolve(err === undefined || err === null));
      });
      if (!changed) {
        break;
      }
      state = channel.getConnectivityState(true);
    }
    throw new IadbError(
      grpc.status.UNAVAILABLE,
      `no connection to ${this.channel.target} (${grpc.connectivityState[state]}): the request was not sent`,
      undefined,
      false,
      true,
    );
  }

  /** The attempts of one call: its policy and the deadline of `opts.timeoutMs`. */
  private attempts(kind: CallKind, opts: { timeoutMs?: number } | undefined): Attempts {
    const timeout = opts?.timeoutMs;
    return new Attempts(this.retryPolicy, kind, timeout !== undefined && timeout > 0 ? Date.now() + timeout : undefined);
  }

  /** `opts` for one attempt: what is left of the call's time. */
  private attemptOptions<O extends { timeoutMs?: number }>(opts: O | undefined, deadlineAt: number | undefined): O | undefined {
    if (opts === undefined || deadlineAt === undefined) {
      return opts;
    }
    return { ...opts, timeoutMs: Math.max(1, Math.ceil(deadlineAt - Date.now())) };
  }

  /** Runs the attempts of one call, retried per the policy and `kind`. */
  private async run<T, O extends { timeoutMs?: number }>(
    kind: CallKind,
    opts: O | undefined,
    attempt: (opts: O | undefined) => Promise<T>,
  ): Promise<T> {
    const attempts = this.attempts(kind, opts);
    for (;;) {
      try {
        if (kind === "write") {
          await this.sendable(attempts.deadlineAt);
        }
        return await attempt(this.attemptOptions(opts, attempts.deadlineAt));
      } catch (e) {
        if (!(await attempts.again(e))) {
          throw e;
        }
      }
    }
  }

  private callOptions(opts: CallOptions | undefined): grpc.CallOptions {
    const timeout = opts?.timeoutMs;
    return timeout !== undefined && timeout > 0 ? { deadline: Date.now() + timeout + 1000 } : {};
  }

  private queryOptions(opts: CallOptions | undefined, read = false): Record<string, unknown> | undefined {
    const timeout = opts?.timeoutMs;
    const readOnly = opts?.readOnly === true;
    const staleness = read ? opts?.maxStalenessMs : undefined;
    const bounded = stalenessFields(staleness);
    if (timeout === undefined || timeout <= 0) {
      if (staleness !== undefined) {
        return { read_only: readOnly, ...bounded };
      }
      return readOnly ? { read_only: true } : undefined;
    }
    if (!Number.isInteger(timeout) || timeout > 0xffffffff) {
      throw new RangeError(`timeoutMs must be a whole number of milliseconds below 2^32, not ${timeout}`);
    }
    return { timeout_ms: timeout, read_only: readOnly, ...bounded };
  }

  private unary<T>(stub: grpc.Client, method: string, request: unknown, opts?: CallOptions): Promise<T> {
    const fn = (stub as unknown as Record<string, UnaryMethod>)[method];
    return new Promise<T>((resolve, reject) => {
      fn.call(stub, request, this.metadata(), this.callOptions(opts), (err, res) => {
        if (err) {
          reject(toIadbError(err));
        } else {
          resolve(res as T);
        }
      });
    });
  }

  /**
   * Runs one statement that returns no rows (INSERT, UPDATE, DDL, ...). A
   * write: retried only when its request was not sent.
   */
  async execute(sql: string, params?: readonly Param[], opts?: CallOptions): Promise<ExecuteResult> {
    this.queryOptions(opts);
    const request = { database: this.database, sql, params: encodeParams(params) };
    const res = await this.run("write", opts, (o) =>
      this.unary<Record<string, unknown>>(this.stub, "Execute", { ...request, options: this.queryOptions(o) }, o),
    );
    return executeResult(res, this.mode);
  }

  /**
   * Runs one statement once per parameter list, in one transaction. A
   * write: retried only when its request was not sent.
   */
  async executeMany(sql: string, paramSets: readonly (readonly Param[])[], opts?: CallOptions): Promise<ExecuteManyResult> {
    if (!Array.isArray(paramSets)) {
      throw new TypeError("paramSets must be an array of parameter arrays");
    }
    this.queryOptions(opts);
    const request = {
      database: this.database,
      sql,
      param_sets: paramSets.map((set) => ({ values: encodeParams(set) })),
    };
    const res = await this.run("write", opts, (o) =>
      this.unary<Record<string, unknown>>(this.stub, "ExecuteMany", { ...request, options: this.queryOptions(o) }, o),
    );
    return {
      rowsAffected: decodeInt(res.rows_affected ?? "0", this.mode),
      executionTimeMs: Number(res.execution_time_ms ?? 0),
    };
  }

  /**
   * Streams a result: `for await (const row of client.fetchAll(sql, params))`.
   * Errors (from the server or a bad parameter) reject the iteration. A
   * read: retried on UNAVAILABLE before the first frame arrived (send a
   * statement that writes, `INSERT ... RETURNING` too, with `execute`).
   */
  fetchAll(sql: string, params?: readonly Param[], opts?: CallOptions): RowStream {
    return new RowStream(
      (deadlineAt) => {
        const o = this.attemptOptions(opts, deadlineAt);
        const request = {
          database: this.database,
          sql,
          params: encodeParams(params),
          options: this.queryOptions(o, true),
        };
        const stub = this.stub as unknown as Record<
          string,
          (req: unknown, metadata: grpc.Metadata, options: grpc.CallOptions) => grpc.ClientReadableStream<unknown>
        >;
        return stub.FetchAll.call(this.stub, request, this.metadata(), this.callOptions(o));
      },
      this.mode,
      () => this.attempts("read", opts),
    );
  }

  /**
   * Every row of a query as an apache-arrow `Table`: the server sends the
   * result as Arrow IPC (`result_format = ARROW`), with no JavaScript
   * object per value. int64 columns hold `bigint`s (Arrow's own mapping;
   * the client's `int64` option does not apply); each engine's column
   * types are in docs/arrow.md. A read: retried on UNAVAILABLE. A result
   * cut short (no summary, or fewer rows than it counts) rejects with
   * INTERNAL, never resolves to a short table.
   */
  async fetchArrow(sql: string, params?: readonly Param[], opts?: CallOptions): Promise<Table> {
    this.queryOptions(opts, true);
    const encoded = encodeParams(params);
    return this.run("read", opts, async (o) => {
      const request = {
        database: this.database,
        sql,
        params: encoded,
        options: { ...(this.queryOptions(o, true) ?? {}), result_format: "RESULT_FORMAT_ARROW" },
      };
      const stub = this.stub as unknown as Record<
        string,
        (req: unknown, metadata: grpc.Metadata, options: grpc.CallOptions) => grpc.ClientReadableStream<unknown>
      >;
      const call = stub.FetchAll.call(this.stub, request, this.metadata(), this.callOptions(o));
      const collector = new ArrowCollector("FetchAll", this.mode);
      let finished = false;
      try {
        for await (const frame of call as AsyncIterable<Record<string, unknown>>) {
          collector.feed(frame);
        }
        finished = true;
      } catch (e) {
        throw toIadbError(e);
      } finally {
        if (!finished) {
          call.on("error", () => {});
          call.cancel();
        }
      }
      return collector.table();
    });
  }

  /** The first row of a result, or `null` when it is empty. A read. */
  async fetchOne(sql: string, params?: readonly Param[], opts?: CallOptions): Promise<Row | null> {
    this.queryOptions(opts, true);
    const request = { database: this.database, sql, params: encodeParams(params) };
    const res = await this.run("read", opts, (o) =>
      this.unary<{ columns?: WireColumn[]; row?: WireRow | null }>(
        this.stub,
        "FetchOne",
        { ...request, options: this.queryOptions(o, true) },
        o,
      ),
    );
    if (res.row === undefined || res.row === null) {
      return null;
    }
    return decodeRow(
      decodeColumns(res.columns).map((c) => c.name),
      res.row,
      this.mode,
    );
  }

  /** Whether a table exists (`schema.table` where the engine has schemas). */
  async tableExists(table: string, opts?: CallOptions): Promise<boolean> {
    const res = await this.run("read", opts, (o) =>
      this.unary<{ exists?: boolean }>(this.stub, "TableExists", { database: this.database, table }, o),
    );
    return res.exists === true;
  }

  /**
   * The iadb Health RPC: liveness and pool figures of `database` (default:
   * every configured database).
   */
  async health(database = "", opts?: CallOptions): Promise<DatabaseHealth[]> {
    const res = await this.run("read", opts, (o) =>
      this.unary<{ databases?: Record<string, unknown>[] }>(this.stub, "Health", { database }, o),
    );
    return (res.databases ?? []).map((d) => ({
      name: String(d.name ?? ""),
      engine: String(d.engine ?? ""),
      healthy: d.healthy === true,
      message: String(d.message ?? ""),
      poolSize: Number(d.pool_size ?? 0),
      poolIdle: Number(d.pool_idle ?? 0),
      poolMax: Number(d.pool_max ?? 0),
      latencyMs: Number(d.latency_ms ?? 0),
    }));
  }

  /**
   * The standard `grpc.health.v1.Health/Check` of `service` ("" is the whole
   * server, a database name that database). An unknown service rejects with
   * NOT_FOUND.
   */
  async standardHealth(service = "", opts?: CallOptions): Promise<ServingStatus> {
    const res = await this.run("read", opts, (o) => this.unary<{ status?: string }>(this.healthStub, "Check", { service }, o));
    return (res.status ?? "UNKNOWN") as ServingStatus;
  }

  /**
   * Runs statements in one transaction and one round trip: all of them are
   * applied or none is. Resolves to one result per statement; a failure
   * rejects with an `IadbError` whose `statementIndex` names the failing
   * statement (0-based), and nothing was changed.
   */
  async batch(statements: readonly BatchStatement[], opts?: BatchOptions): Promise<StatementResult[]> {
    if (!Array.isArray(statements)) {
      throw new TypeError("statements must be an array of SQL strings, [sql, params] pairs or { sql, params }");
    }
    this.queryOptions(opts);
    const readOnly = checkFlag("readOnly", opts?.readOnly);
    const request = {
      database: this.database,
      statements: statements.map((item, i) => encodeStatement(item, i)),
      read_only: readOnly,
    };
    const res = await this.run(readOnly ? "read" : "write", opts, (o) =>
      this.unary<{ results?: Record<string, unknown>[] }>(
        this.stub,
        "Batch",
        { ...request, options: this.queryOptions(o) },
        o,
      ),
    );
    return (res.results ?? []).map((r) => {
      const columns = decodeColumns(r.columns as WireColumn[] | undefined);
      const names = columns.map((c) => c.name);
      const result: StatementResult = {
        rowsAffected: decodeInt(r.rows_affected ?? "0", this.mode),
        columns,
        rows: ((r.rows as WireRow[] | undefined) ?? []).map((row) => decodeRow(names, row, this.mode)),
      };
      if (r._last_insert_id === "last_insert_id" && r.last_insert_id !== undefined) {
        result.lastInsertId = decodeInt(r.last_insert_id, this.mode);
      }
      return result;
    });
  }

  /**
   * Runs `fn` in one interactive transaction and resolves to what it
   * resolves to. The transaction is committed when `fn` resolves, and
   * rolled back when it throws (the error is rethrown). When a statement
   * failed and `fn` caught the error and resolved anyway, nothing was
   * committed and `transaction` rejects with that error.
   */
  async transaction<T>(fn: (tx: Transaction) => Promise<T>, options: TransactionOptions = {}): Promise<T> {
    if (typeof fn !== "function") {
      throw new TypeError("transaction(fn, options): fn is an async function that receives the transaction");
    }
    const isolation = options.isolation;
    if (isolation !== undefined && !(isolation in ISOLATION_WIRE)) {
      throw new RangeError(
        `isolation must be one of ${Object.keys(ISOLATION_WIRE).join(", ")} (or absent), not ${JSON.stringify(isolation)}`,
      );
    }
    const begin = {
      begin: {
        database: this.database,
        isolation: isolation === undefined ? "ISOLATION_LEVEL_UNSPECIFIED" : ISOLATION_WIRE[isolation],
        read_only: checkFlag("readOnly", options.readOnly),
        immediate: checkFlag("immediate", options.immediate),
        ...(options.readOnly === true ? stalenessFields(options.maxStalenessMs) : {}),
      },
    };
    const stub = this.stub as unknown as Record<
      string,
      (metadata: grpc.Metadata, options: grpc.CallOptions) => grpc.ClientDuplexStream<unknown, unknown>
    >;
    // Opening it is retried as a read (nothing has run yet); nothing after.
    const attempts = this.attempts("read", options);
    let tx: Transaction;
    for (;;) {
      const call = stub.Transaction.call(
        this.stub,
        this.metadata(),
        this.callOptions(this.attemptOptions(options, attempts.deadlineAt)),
      );
      const frames = (call as unknown as AsyncIterable<Record<string, unknown>>)[Symbol.asyncIterator]();
      tx = new Transaction(call, frames, this.mode);
      call.write(begin);
      try {
        await tx.begun();
        break;
      } catch (e) {
        call.cancel();
        if (!(await attempts.again(e))) {
          throw e;
        }
      }
    }
    let value: T;
    try {
      value = await fn(tx);
    } catch (e) {
      await tx.abandon();
      throw e;
    }
    await tx.finish();
    return value;
  }

  /**
   * The Migrate RPC: `action` is "status", "plan" (a dry run: the pending
   * migrations and their SQL), "apply", "rollback" (run undo files down to
   * `targetVersion`, which stays applied), "validate", "repair" or
   * "baseline" (mark migrations up to `targetVersion` applied without
   * running them). App migrations are sent from `paths` (folders) and
   * `files`. A write: retried only when its request was not sent.
   */
  async migrate(action: MigrateAction = "apply", options: MigrateOptions = {}): Promise<MigrateResult> {
    if (typeof action !== "string" || !MIGRATE_ACTIONS.includes(action.trim().toLowerCase() as MigrateAction)) {
      throw new RangeError(`action must be one of ${MIGRATE_ACTIONS.join(", ")}, not ${JSON.stringify(action)}`);
    }
    const target = options.targetVersion;
    if (target !== undefined && typeof target !== "string") {
      throw new TypeError("targetVersion must be a string");
    }
    const request = {
      database: this.database,
      action: `MIGRATE_ACTION_${action.trim().toUpperCase()}`,
      target_version: target ?? "",
      files: [...migrationFiles(options.paths), ...sentFiles(options.files)],
      allow_missing: checkFlag("allowMissing", options.allowMissing),
      allow_out_of_order: checkFlag("allowOutOfOrder", options.allowOutOfOrder),
    };
    const res = await this.run("write", options, (o) =>
      this.unary<{ migrations?: Record<string, unknown>[]; changed?: string[]; execution_time_ms?: number }>(
        this.stub,
        "Migrate",
        request,
        o,
      ),
    );
    const migrations = (res.migrations ?? []).map(migrationStatus);
    return {
      migrations,
      changed: (res.changed ?? []).map(String),
      executionTimeMs: Number(res.execution_time_ms ?? 0),
      pending: migrations.filter((m) => m.state === "pending"),
      applied: migrations.filter((m) => m.state === "applied"),
    };
  }

  /** Closes the channel; calls in flight end with CANCELLED. */
  close(): void {
    this.stub.close();
  }
}
