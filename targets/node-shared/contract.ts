// The runtime-neutral half of the HTTP contract (targets/contract.py), shared by the Node families (prisma,
// node) and the worker (workerd) family: settings, counters, histograms, error bodies. No Node or Workers API
// in here but AsyncLocalStorage, which both offer (workerd with nodejs_compat). No package imports either:
// each family bundles its own pg, and Prisma's adapter checks `instanceof` its pg's Pool.
import { AsyncLocalStorage } from "node:async_hooks";

export const WORLD_ROWS = 10_000;

// The settings of targets/contract.py SETTINGS: same environment names, same defaults.
const SETTINGS = {
  pool_min: ["CONNBENCH_POOL_MIN", 10],
  pool_max: ["CONNBENCH_POOL_MAX", 10],
  pool_timeout: ["CONNBENCH_POOL_TIMEOUT", 5.0],
  connect_timeout: ["CONNBENCH_CONNECT_TIMEOUT", 5.0],
  request_timeout: ["CONNBENCH_REQUEST_TIMEOUT", 10.0],
  shutdown_timeout: ["CONNBENCH_SHUTDOWN_TIMEOUT", 10.0],
  idle_timeout: ["CONNBENCH_IDLE_TIMEOUT", 0.0],
  tcp_keepalive: ["CONNBENCH_TCP_KEEPALIVE", 0.0],
  // read and reported only: node-postgres and postgres.js have no check-on-checkout or TCP_USER_TIMEOUT option
  pool_check: ["CONNBENCH_POOL_CHECK", 0],
  tcp_user_timeout: ["CONNBENCH_TCP_USER_TIMEOUT", 0.0],
} as const;

export type Settings = { [K in keyof typeof SETTINGS]: number };

export function readSettings(env: Record<string, string | undefined>): Settings {
  const out = {} as Settings;
  for (const [name, [key, fallback]] of Object.entries(SETTINGS)) {
    const raw = env[key];
    const value = raw === undefined || raw === null || raw === "" ? fallback : Number(raw);
    if (!Number.isFinite(value)) throw new Error(`${key}=${JSON.stringify(raw)} is not a number`);
    out[name as keyof Settings] = name.startsWith("pool_m") ? Math.trunc(value) : value;
  }
  return out;
}

// tcp_keepalive in milliseconds for Node's socket.setKeepAlive, which counts whole seconds (as libpq does): at
// least 1 s, since a delay under a second would be 0 there.
export function keepAliveMs(settings: Settings): number {
  return Math.max(1, Math.round(settings.tcp_keepalive)) * 1000;
}

// targets/contract.py fine_bucket and its keys: 0.1 ms below 10 ms ("0.4", "3"), 1 ms below 100, 10 ms
// below 1000, then 100 ms.
export function fineBucket(ms: number): string {
  if (ms < 10) return String(Math.round(ms * 10) / 10);
  if (ms < 100) return String(Math.round(ms));
  if (ms < 1000) return String(Math.round(ms / 10) * 10);
  return String(Math.round(ms / 100) * 100);
}

export class Stats {
  startedAt = Date.now() / 1000;
  readyAt: number | null = null;
  requests = 0;
  connectionsOpened = 0;
  readonly errors: Record<string, number> = {};
  readonly acquireMs: Record<string, number> = {};
  readonly queryMs: Record<string, number> = {};

  error(kind: string): void {
    this.errors[kind] = (this.errors[kind] ?? 0) + 1;
  }

  record(hist: Record<string, number>, ms: number): void {
    const key = fineBucket(ms);
    hist[key] = (hist[key] ?? 0) + 1;
  }

  // Runs the database part of one request, `work`, which calls `done()` once its query has answered:
  // query_ms is the time until then minus the pool checkouts made meanwhile (acquire_ms, see timedPool).
  timed<T>(work: (done: () => void) => Promise<T>): Promise<T> {
    const request: RequestTiming = { stats: this, acquireMs: 0 };
    const started = performance.now();
    const done = () => this.record(this.queryMs, performance.now() - started - request.acquireMs);
    return currentRequest.run(request, () => work(done));
  }
}

// Prisma takes its connection inside the query (pool.query or, for an interactive transaction,
// pool.connect()), out of reach of the code that calls it. Both end in the pool's connect(), called in the
// async context of the request that asked: AsyncLocalStorage carries that request's timing there.
export const TIMINGS =
  "acquire_ms: the pg pool's checkouts (waiting for a free client or connecting) made for the request; " +
  "query_ms: the request's database time until its row is back, checkouts not included";
type RequestTiming = { stats: Stats; acquireMs: number };
const currentRequest = new AsyncLocalStorage<RequestTiming>();

type Checkout = (err: Error | undefined, client?: unknown, release?: unknown) => void;
type PoolClass = new (...args: any[]) => { connect(callback?: Checkout): any };

// Starts timing one acquisition of a connection (waiting for a free one or opening one) for the request
// running now; the returned function, called once it succeeded (`at`: when, if not now), counts it in that
// request's acquire_ms. Outside a request (the exit hook) it counts nothing.
export function startAcquire(): (at?: number) => void {
  const request = currentRequest.getStore();
  const asked = performance.now();
  return (at = performance.now()) => {
    if (request === undefined) return;
    const ms = at - asked;
    request.acquireMs += ms;
    request.stats.record(request.stats.acquireMs, ms);
  };
}

// A subclass of pg's Pool (pass the family's own pg.Pool) whose successful checkouts, waiting for a free
// client or opening a connection, count in acquire_ms of the request that made them.
export function timedPool<P extends PoolClass>(Pool: P): P {
  return class TimedPool extends Pool {
    connect(callback?: Checkout): any {
      const acquired = startAcquire();
      if (callback) {
        return super.connect((err, client, release) => {
          if (!err) acquired();
          callback(err, client, release);
        });
      }
      return super.connect().then((client: unknown) => {
        acquired();
        return client;
      });
    }
  };
}

const SQLSTATE = /^[0-9A-Z]{5}$/;

// PostgreSQL's SQLSTATE wherever the error chain carries it: pg's `code`, Prisma's driver-adapter
// `meta.driverAdapterError.cause.originalCode`, or a `cause` further down.
export function sqlstateOf(err: unknown, depth = 0): string | null {
  if (err === null || typeof err !== "object" || depth > 6) return null;
  const e = err as Record<string, any>;
  for (const candidate of [e.code, e.originalCode, e.sqlState]) {
    if (typeof candidate === "string" && SQLSTATE.test(candidate) && !candidate.startsWith("P")) return candidate;
  }
  for (const next of [e.meta?.driverAdapterError?.cause, e.cause, e.meta?.driverAdapterError]) {
    const found = sqlstateOf(next, depth + 1);
    if (found) return found;
  }
  return null;
}

export class TimeoutError extends Error {
  constructor(what: string, seconds: number) {
    super(`${what} took longer than ${seconds} s`);
    this.name = "TimeoutError";
  }
}

export function errorBody(err: unknown): { error: string; sqlstate: string | null; detail: string } {
  const e = err as { constructor?: { name?: string }; name?: string; message?: string };
  const kind = (err instanceof Error && err.constructor?.name) || e?.name || typeof err;
  const text = String(e?.message ?? err).trim();
  // Prisma puts "Invalid `prisma.x()` invocation:" first and what went wrong last.
  const line = text.split("\n").filter((l) => l.trim() !== "").pop() ?? kind;
  return { error: kind === "Error" && e?.name ? e.name : kind, sqlstate: sqlstateOf(err), detail: line.slice(0, 300) };
}

export function withTimeout<T>(promise: Promise<T>, seconds: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new TimeoutError(what, seconds)), seconds * 1000);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// connbench's DSNs mean sslmode as libpq does (`require`: encrypt, do not verify the certificate); pg reads
// it that way only with uselibpqcompat=true (without it, `require` verifies like `verify-full`).
export function libpqDsn(dsn: string): string {
  try {
    const url = new URL(dsn);
    if (url.searchParams.has("sslmode") && !url.searchParams.has("uselibpqcompat")) {
      url.searchParams.set("uselibpqcompat", "true");
    }
    return url.toString();
  } catch {
    return dsn; // not a URL: pg reads it as it is
  }
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export function randomWorldId(): number {
  return 1 + Math.floor(Math.random() * WORLD_ROWS);
}

// `GET /db?work_ms=N&hold=1` (targets/contract.py DB_PARAMS): N ms of non-database work, with the connection
// held (hold=1) or after it was released (hold=0, the default). A bad value throws BadRequest (400).
export class BadRequest extends Error {
  name = "BadRequest";
}

export function slowWork(url: URL): { workMs: number; hold: boolean } {
  const raw = url.searchParams.get("work_ms") || "0";
  const workMs = Number(raw);
  const hold = url.searchParams.get("hold") || "0";
  if (!Number.isFinite(workMs) || workMs < 0 || workMs > 60_000 || !["0", "1"].includes(hold)) {
    throw new BadRequest("work_ms must be between 0 and 60000 and hold 0 or 1");
  }
  return { workMs, hold: hold === "1" };
}

export function badRequestBody(err: BadRequest): { error: string; sqlstate: null; detail: string } {
  return { error: "BadRequest", sqlstate: null, detail: err.message };
}


/** The subset of a PrismaClient (or its transaction client) that /db uses; each family passes its own. */
type WorldRow = { id: number; randomNumber: number };
type WorldClient = { world: { findUniqueOrThrow(args: { where: { id: number } }): Promise<WorldRow> } };
type WorldDb = WorldClient & {
  $transaction<T>(fn: (tx: WorldClient) => Promise<T>, options: { maxWait: number; timeout: number }): Promise<T>;
};

/** One /db query inside `Stats.timed`: with hold=1 the slow work runs in a transaction, holding the connection;
 * `done()` marks the end of the query either way. (hold=0's work, after the release, is the caller's.) */
export async function fetchWorld(
  client: WorldDb,
  id: number,
  params: { workMs: number; hold: boolean },
  settings: Settings,
  done: () => void,
): Promise<WorldRow> {
  if (params.hold && params.workMs > 0) {
    return client.$transaction(
      async (tx) => {
        const r = await tx.world.findUniqueOrThrow({ where: { id } });
        done();
        await sleep(params.workMs);
        return r;
      },
      { maxWait: settings.pool_timeout * 1000, timeout: settings.request_timeout * 1000 },
    );
  }
  const r = await client.world.findUniqueOrThrow({ where: { id } });
  done();
  return r;
}
