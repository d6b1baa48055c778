// The prisma family: Prisma Client 7 on Node with @prisma/adapter-pg over a pg Pool, serving the HTTP
// contract (targets/contract.py). One process serves one target (CONNBENCH_TARGET); the strategy is the part of
// the id after "prisma-". Started by `connbench serve` (see family.toml).
import cluster from "node:cluster";
import http from "node:http";
import { PrismaPg } from "@prisma/adapter-pg";
import pg from "pg";
import { PrismaClient } from "../build/generated/client.ts";
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

const TARGET = process.env.CONNBENCH_TARGET ?? "prisma-global";
const DSN = process.env.CONNBENCH_DSN ?? "postgresql://connbench@127.0.0.1:5432/connbench";
const HOST = process.env.CONNBENCH_HOST ?? "127.0.0.1";
const PORT = Number(process.env.CONNBENCH_PORT ?? 8000);
const settings: Settings = readSettings(process.env);
const stats = new Stats();

// Every pool this process created: connections are counted by pg's own pool events.
const pools = { created: 0, ended: 0, open: 0 };
const TimedPool = timedPool(pg.Pool);

function newClient(): { client: PrismaClient; pool: pg.Pool } {
  const pool = new TimedPool({
    connectionString: libpqDsn(DSN),
    max: settings.pool_max,
    // pg applies this to a checkout: waiting for a free slot and opening a new connection.
    connectionTimeoutMillis: settings.pool_timeout * 1000,
    application_name: `connbench:${TARGET}`,
  });
  pools.created += 1;
  pool.on("connect", () => {
    stats.connectionsOpened += 1;
    pools.open += 1;
  });
  pool.on("remove", () => {
    pools.open -= 1;
  });
  pool.on("error", () => {}); // an idle client's socket closed by the server: pg drops it, the next query reconnects
  const client = new PrismaClient({ adapter: new PrismaPg(pool, { disposeExternalPool: true }) });
  return { client, pool };
}

async function disconnect(client: PrismaClient): Promise<void> {
  await client.$disconnect();
  pools.ended += 1;
}

interface Strategy {
  summary: string;
  startup(): Promise<void>;
  run<T>(work: (db: PrismaClient) => Promise<T>): Promise<T>;
  shutdown(): Promise<void>;
  figures(): Record<string, number>;
}

class Global implements Strategy {
  summary = "one PrismaClient per process, created at startup; its pool connects on the first queries";
  protected held = newClient();
  async startup(): Promise<void> {}
  run<T>(work: (db: PrismaClient) => Promise<T>): Promise<T> {
    return work(this.held.client);
  }
  async shutdown(): Promise<void> {
    await disconnect(this.held.client);
  }
  figures(): Record<string, number> {
    const p = this.held.pool;
    return { pool_size: p.totalCount, pool_idle: p.idleCount, pool_waiting: p.waitingCount };
  }
}

class Connect extends Global {
  summary = "one PrismaClient per process with an explicit $connect() before /ready";
  async startup(): Promise<void> {
    await this.held.client.$connect();
  }
}

class PerRequest implements Strategy {
  summary = "a new PrismaClient per request, $disconnect() at its end";
  async startup(): Promise<void> {}
  async run<T>(work: (db: PrismaClient) => Promise<T>): Promise<T> {
    const { client } = newClient();
    try {
      return await work(client);
    } finally {
      await disconnect(client);
    }
  }
  async shutdown(): Promise<void> {}
  figures(): Record<string, number> {
    return {};
  }
}

class Leaky extends PerRequest {
  summary = "a new PrismaClient per request, never disconnected";
  async run<T>(work: (db: PrismaClient) => Promise<T>): Promise<T> {
    return work(newClient().client); // dropped without $disconnect(): whatever pg does then is the finding
  }
}

const STRATEGIES: Record<string, new () => Strategy> = {
  global: Global,
  connect: Connect,
  "per-request": PerRequest,
  leaky: Leaky,
};
const strategyName = TARGET.replace(/^prisma-/, "");
if (!(strategyName in STRATEGIES)) {
  console.error(`connbench: unknown prisma target ${JSON.stringify(TARGET)}`);
  process.exit(2);
}
const strategy = new STRATEGIES[strategyName]();

// -- HTTP ------------------------------------------------------------------------------------------
let inflight = 0;
let stopping = false;

async function db(url: URL): Promise<[number, unknown]> {
  let params: { workMs: number; hold: boolean };
  try {
    params = slowWork(url);
  } catch (err) {
    return [400, badRequestBody(err as BadRequest)];
  }
  const { workMs, hold } = params;
  stats.requests += 1;
  const id = randomWorldId();
  try {
    const row = await withTimeout(
      strategy.run((client) => stats.timed((done) => fetchWorld(client, id, params, settings, done))),
      settings.request_timeout,
      "the request",
    );
    if (!hold && workMs > 0) await sleep(workMs);
    return [200, { id: row.id, randomNumber: row.randomNumber }];
  } catch (err) {
    const body = errorBody(err);
    stats.error(body.error);
    return [503, body];
  }
}

function statsBody(): Record<string, unknown> {
  return {
    target: TARGET,
    strategy: TARGET,
    family: "prisma",
    driver: "pg",
    summary: strategy.summary,
    pid: process.pid,
    started_at: stats.startedAt,
    ready_at: stats.readyAt,
    requests: stats.requests,
    errors: stats.errors,
    connections_opened: stats.connectionsOpened,
    pool: {
      pool_max: settings.pool_max,
      pools_created: pools.created,
      pools_disconnected: pools.ended,
      connections_open: pools.open,
      ...strategy.figures(),
    },
    settings,
    acquire_ms: stats.acquireMs,
    query_ms: stats.queryMs,
    timings: TIMINGS,
    runtime: { node: process.version },
  };
}

const server = http.createServer(async (req, res) => {
  inflight += 1;
  try {
    const url = new URL(req.url ?? "/", "http://target");
    let status = 200;
    let body: unknown;
    if (url.pathname === "/db") [status, body] = await db(url);
    else if (url.pathname === "/health") body = { status: "ok" };
    else if (url.pathname === "/ready") [status, body] = stats.readyAt ? [200, { ready: true }] : [503, { ready: false }];
    else if (url.pathname === "/stats") body = statsBody();
    else [status, body] = [404, { error: "NotFound", sqlstate: null, detail: url.pathname }];
    const text = JSON.stringify(body);
    const headers: Record<string, string | number> = {
      "content-type": "application/json",
      "content-length": Buffer.byteLength(text), // not chunked: clients may read by length
    };
    if (stopping) headers.connection = "close";
    res.writeHead(status, headers).end(text);
  } finally {
    inflight -= 1;
  }
});
server.keepAliveTimeout = 65_000;

// SIGTERM: stop accepting, let in-flight requests finish, exit hook (a row in shutdown_log through
// Prisma), $disconnect(), exit 0. Prisma 7 has no beforeExit hook of its own: this is Node's process hook.
async function shutdown(signal: string): Promise<void> {
  if (stopping) return;
  stopping = true;
  server.close();
  server.closeIdleConnections();
  const deadline = Date.now() + settings.shutdown_timeout * 1000;
  while (inflight > 0 && Date.now() < deadline) await sleep(20);
  try {
    await withTimeout(
      strategy.run((client) => client.shutdownLog.create({ data: { target: TARGET, pid: process.pid } })),
      settings.shutdown_timeout,
      "the exit hook",
    );
    console.log(`connbench: ${signal}: exit hook logged, disconnecting`);
  } catch (err) {
    console.log(`connbench: exit hook failed: ${JSON.stringify(errorBody(err))}`);
  }
  await withTimeout(strategy.shutdown(), settings.shutdown_timeout, "$disconnect()").catch(() => {});
  process.exit(0);
}

// CONNBENCH_WORKERS > 1: a primary process forks that many servers sharing the port (node:cluster), passes
// SIGTERM on to each (each runs its own exit hook) and exits 0 when all have exited.
function supervise(workers: number): void {
  let stopping = false;
  for (let i = 0; i < workers; i++) cluster.fork();
  const stop = (signal: NodeJS.Signals) => {
    stopping = true;
    for (const w of Object.values(cluster.workers ?? {})) w?.process.kill(signal);
  };
  process.on("SIGTERM", () => stop("SIGTERM"));
  process.on("SIGINT", () => stop("SIGINT"));
  cluster.on("exit", (worker, code) => {
    if (!stopping) {
      console.error(`connbench: server ${worker.process.pid} exited with ${code}; stopping the others`);
      stop("SIGTERM");
      process.exitCode = 1;
    }
    if (Object.keys(cluster.workers ?? {}).length === 0) process.exit();
  });
}

const WORKERS = Number(process.env.CONNBENCH_WORKERS ?? 1);
if (WORKERS > 1 && cluster.isPrimary) {
  supervise(WORKERS);
} else {
  process.on("SIGTERM", () => void shutdown("SIGTERM"));
  process.on("SIGINT", () => void shutdown("SIGINT"));
  await strategy.startup();
  server.listen(PORT, HOST, () => {
    stats.readyAt = Date.now() / 1000;
  });
}
