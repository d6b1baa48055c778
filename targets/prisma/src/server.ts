// The prisma family: Prisma Client 7 on Node with @prisma/adapter-pg over a pg Pool, serving the HTTP
// contract (targets/contract.py). One process serves one target (CONNBENCH_TARGET); the strategy is the part of
// the id after "prisma-". Started by `connbench serve` (see family.toml).
import { PrismaPg } from "@prisma/adapter-pg";
import pg from "pg";
import { PrismaClient } from "../build/generated/client.ts";
import { fetchWorld, keepAliveMs, libpqDsn, readSettings, type Settings, Stats, TIMINGS, timedPool } from "../../node-shared/contract.ts";
import { serve } from "../../node-shared/server.ts";

const TARGET = process.env.CONNBENCH_TARGET ?? "prisma-global";
const DSN = process.env.CONNBENCH_DSN ?? "postgresql://connbench@127.0.0.1:5432/connbench";
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
    // pg-pool closes a client idle that long (its default: 10 s, kept when idle_timeout is 0).
    ...(settings.idle_timeout > 0 ? { idleTimeoutMillis: settings.idle_timeout * 1000 } : {}),
    // pg's TCP keepalive, the first probe after that long idle (its default: off, kept when tcp_keepalive is 0).
    ...(settings.tcp_keepalive > 0 ? { keepAlive: true, keepAliveInitialDelayMillis: keepAliveMs(settings) } : {}),
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

await serve(
  TARGET,
  {
    family: "prisma",
    driver: "pg",
    summary: strategy.summary,
    timings: TIMINGS,
    startup: () => strategy.startup(),
    world: (id, params, stats) =>
      strategy.run((client) => stats.timed((done) => fetchWorld(client, id, params, settings, done))),
    exitHook: (target, pid) => strategy.run((client) => client.shutdownLog.create({ data: { target, pid } })).then(() => {}),
    close: () => strategy.shutdown(),
    pool: () => ({
      pools_created: pools.created,
      pools_disconnected: pools.ended,
      connections_open: pools.open,
      ...strategy.figures(),
    }),
  },
  settings,
  stats,
);
