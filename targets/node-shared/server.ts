// The Node half of the HTTP contract (targets/contract.py), shared by the Node families (prisma, node): the
// HTTP server on node:http, the SIGTERM exit hook and node:cluster workers. A family supplies a Service, one
// target's way of getting its row and of writing the exit hook's; workerd has its own fetch handler instead.
import cluster from "node:cluster";
import http from "node:http";
import {
  BadRequest,
  badRequestBody,
  errorBody,
  randomWorldId,
  type Settings,
  sleep,
  slowWork,
  Stats,
  withTimeout,
} from "./contract.ts";

export type Params = { workMs: number; hold: boolean };
export type WorldRow = { id: number; randomNumber: number };

/** One target of a Node family. */
export interface Service {
  family: string;
  driver: string;
  summary: string;
  timings: string; // what acquire_ms and query_ms measure for it
  startup(): Promise<void>; // before /ready answers 200
  // GET /db's row, timed by `stats.timed` (done() once the row is back); with hold=1 the slow work too,
  // before the connection goes back.
  world(id: number, params: Params, stats: Stats): Promise<WorldRow>;
  exitHook(target: string, pid: number): Promise<void>; // a row in shutdown_log, through the target's client
  close(): Promise<void>; // release its pool or client
  pool(): Record<string, unknown>; // /stats "pool"
}

/** Serves `service` as `target` on CONNBENCH_HOST:CONNBENCH_PORT (CONNBENCH_WORKERS processes). */
export async function serve(target: string, service: Service, settings: Settings, stats: Stats): Promise<void> {
  const host = process.env.CONNBENCH_HOST ?? "127.0.0.1";
  const port = Number(process.env.CONNBENCH_PORT ?? 8000);
  let inflight = 0;
  let stopping = false;

  async function db(url: URL): Promise<[number, unknown]> {
    let params: Params;
    try {
      params = slowWork(url);
    } catch (err) {
      return [400, badRequestBody(err as BadRequest)];
    }
    stats.requests += 1;
    const id = randomWorldId();
    try {
      const row = await withTimeout(service.world(id, params, stats), settings.request_timeout, "the request");
      if (!params.hold && params.workMs > 0) await sleep(params.workMs);
      return [200, { id: row.id, randomNumber: row.randomNumber }];
    } catch (err) {
      const body = errorBody(err);
      stats.error(body.error);
      return [503, body];
    }
  }

  function statsBody(): Record<string, unknown> {
    return {
      target,
      strategy: target,
      family: service.family,
      driver: service.driver,
      summary: service.summary,
      pid: process.pid,
      started_at: stats.startedAt,
      ready_at: stats.readyAt,
      requests: stats.requests,
      errors: stats.errors,
      connections_opened: stats.connectionsOpened,
      pool: { pool_max: settings.pool_max, ...service.pool() },
      settings,
      acquire_ms: stats.acquireMs,
      query_ms: stats.queryMs,
      timings: service.timings,
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

  // SIGTERM: stop accepting, let in-flight requests finish, exit hook, release the client, exit 0. Neither
  // Prisma 7 nor the drivers have a hook of their own for this: it is Node's process hook.
  async function shutdown(signal: string): Promise<void> {
    if (stopping) return;
    stopping = true;
    server.close();
    server.closeIdleConnections();
    const deadline = Date.now() + settings.shutdown_timeout * 1000;
    while (inflight > 0 && Date.now() < deadline) await sleep(20);
    try {
      await withTimeout(service.exitHook(target, process.pid), settings.shutdown_timeout, "the exit hook");
      console.log(`connbench: ${signal}: exit hook logged, closing`);
    } catch (err) {
      console.log(`connbench: exit hook failed: ${JSON.stringify(errorBody(err))}`);
    }
    await withTimeout(service.close(), settings.shutdown_timeout, "closing").catch(() => {});
    process.exit(0);
  }

  const workers = Number(process.env.CONNBENCH_WORKERS ?? 1);
  if (workers > 1 && cluster.isPrimary) {
    supervise(workers);
    return;
  }
  process.on("SIGTERM", () => void shutdown("SIGTERM"));
  process.on("SIGINT", () => void shutdown("SIGINT"));
  await service.startup();
  server.listen(port, host, () => {
    stats.readyAt = Date.now() / 1000;
  });
}

// CONNBENCH_WORKERS > 1: a primary process forks that many servers sharing the port (node:cluster), passes
// SIGTERM on to each (each runs its own exit hook) and exits when all have exited.
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
