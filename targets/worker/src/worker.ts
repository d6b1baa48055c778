// The worker family: the seed's Cloudflare Worker (Prisma 7 + @prisma/adapter-pg over a pg Pool) on
// workerd, serving the HTTP contract (targets/contract.py). worker-global keeps the client in a module-level
// variable and reuses it across requests, as the seed did; worker-per-request creates one per request, and
// worker-pgbouncer does the same through a PgBouncer next to it (what Hyperdrive does for a Worker).
//
// workerd runs this module in one isolate: the counters below are module-level state of that isolate
// (requests may run concurrently in it; workerd may evict and re-create an isolate, which resets them).
// workerd gives a Worker no hook on SIGTERM: it exits without running an exit hook.
import { PrismaPg } from "@prisma/adapter-pg";
import pg from "pg";
import {
  BadRequest,
  badRequestBody,
  errorBody,
  fetchWorld,
  libpqDsn,
  randomWorldId,
  readSettings,
  type Settings,
  sleep,
  slowWork,
  Stats,
  TIMINGS,
  timedPool,
  withTimeout,
} from "../../node-shared/contract.ts";
import { PrismaClient } from "../build/generated/client.ts";

type Env = Record<string, string | undefined>;
type Ctx = { waitUntil(promise: Promise<unknown>): void };

let globalClient: PrismaClient | undefined; // the seed's module-level client
let stats: Stats | undefined; // created by the first request: Date.now() is frozen at 0 outside a request
let settings: Settings;
const pools = { created: 0, ended: 0 };
const TimedPool = timedPool(pg.Pool);

function newClient(env: Env): PrismaClient {
  const pool = new TimedPool({
    connectionString: libpqDsn(env.CONNBENCH_DSN ?? ""),
    max: settings.pool_max,
    connectionTimeoutMillis: settings.pool_timeout * 1000,
    application_name: `connbench:${env.CONNBENCH_TARGET}`,
  });
  pools.created += 1;
  pool.on("connect", () => {
    if (stats) stats.connectionsOpened += 1;
  });
  pool.on("error", () => {});
  return new PrismaClient({ adapter: new PrismaPg(pool, { disposeExternalPool: true }) });
}

function jsonResponse(body: unknown, status = 200): Response {
  return new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } });
}

async function db(url: URL, env: Env, ctx: Ctx, s: Stats): Promise<Response> {
  let params: { workMs: number; hold: boolean };
  try {
    params = slowWork(url);
  } catch (err) {
    return jsonResponse(badRequestBody(err as BadRequest), 400);
  }
  s.requests += 1;
  const perRequest = env.CONNBENCH_TARGET !== "worker-global"; // worker-per-request, worker-pgbouncer
  const client = perRequest ? newClient(env) : (globalClient ??= newClient(env));
  const id = randomWorldId();
  const { workMs, hold } = params;
  try {
    const row = await withTimeout(
      s.timed((done) => fetchWorld(client, id, params, settings, done)),
      settings.request_timeout,
      "the request",
    );
    if (!hold && workMs > 0) await sleep(workMs);
    return jsonResponse({ id: row.id, randomNumber: row.randomNumber });
  } catch (err) {
    const body = errorBody(err);
    s.error(body.error);
    return jsonResponse(body, 503);
  } finally {
    if (perRequest) {
      ctx.waitUntil(client.$disconnect().then(() => void (pools.ended += 1)));
    }
  }
}

function statsBody(env: Env, s: Stats): Record<string, unknown> {
  return {
    target: env.CONNBENCH_TARGET,
    strategy: env.CONNBENCH_TARGET,
    family: "worker",
    driver: "pg",
    pid: Number(env.CONNBENCH_PID ?? 0) || null,
    started_at: s.startedAt,
    ready_at: s.readyAt,
    requests: s.requests,
    errors: s.errors,
    connections_opened: s.connectionsOpened,
    pool: { pool_max: settings.pool_max, pools_created: pools.created, pools_disconnected: pools.ended },
    settings,
    acquire_ms: s.acquireMs,
    query_ms: s.queryMs,
    timings: TIMINGS,
    limits:
      "counters are module-level state of one isolate (reset if workerd re-creates it); " +
      "workerd has no SIGTERM hook, so no exit hook runs and shutdown_log gets no row",
  };
}

export default {
  async fetch(request: Request, env: Env, ctx: Ctx): Promise<Response> {
    if (stats === undefined) {
      settings = readSettings(env);
      stats = new Stats();
      // `connbench serve` notes when it started workerd; the isolate itself starts with the first request
      // and has no work to do before ready.
      stats.readyAt = stats.startedAt;
      stats.startedAt = Number(env.CONNBENCH_STARTED_AT) || stats.startedAt;
    }
    const url = new URL(request.url);
    switch (url.pathname) {
      case "/db":
        return db(url, env, ctx, stats);
      case "/health":
        return jsonResponse({ status: "ok" });
      case "/ready":
        return jsonResponse({ ready: true });
      case "/stats":
        return jsonResponse(statsBody(env, stats));
      default:
        return jsonResponse({ error: "NotFound", sqlstate: null, detail: url.pathname }, 404);
    }
  },
};
