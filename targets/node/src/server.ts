// The node family: node-postgres (pg) and postgres.js on Node without an ORM, serving the HTTP contract
// (targets/contract.py). One process serves one target (CONNBENCH_TARGET); the strategy is the part of the id
// after "node-". Started by `connbench serve` (see family.toml).
import pg from "pg";
import postgres from "postgres";
import { keepAliveMs, libpqDsn, readSettings, type Settings, Stats, sleep, startAcquire, timedPool } from "../../node-shared/contract.ts";
import { type Params, serve, type WorldRow } from "../../node-shared/server.ts";

const TARGET = process.env.CONNBENCH_TARGET ?? "node-pg-pool";
const DSN = process.env.CONNBENCH_DSN ?? "postgresql://connbench@127.0.0.1:5432/connbench";
const APPLICATION_NAME = `connbench:${TARGET}`;
const settings: Settings = readSettings(process.env);
const stats = new Stats();

const WORLD = "SELECT id, randomnumber FROM world WHERE id = $1";
const LOG_SHUTDOWN = "INSERT INTO shutdown_log (target, pid) VALUES ($1, $2)";

/** One strategy: how /db gets its row (inside `Stats.timed`, calling `done()` once the row is back; with
 * hold=1 it also does the slow work before giving the connection back) and how the exit hook writes. */
interface Strategy {
  driver: string;
  summary: string;
  timings: string;
  world(id: number, params: Params, done: () => void): Promise<WorldRow>;
  logShutdown(): Promise<void>;
  close(): Promise<void>;
  figures(): Record<string, number>;
}

// -- node-postgres -------------------------------------------------------------------------------------
// pg's own connection events count the connections (`connect` when one is open, `end` or the pool's `remove`
// when it is gone).
let connectionsOpen = 0;
function opened(): void {
  stats.connectionsOpened += 1;
  connectionsOpen += 1;
}

// tcp_keepalive > 0: pg turns on TCP keepalive with the first probe after that long idle (Node's
// socket.setKeepAlive; 0: pg's default, off).
const pgConfig = {
  connectionString: libpqDsn(DSN),
  application_name: APPLICATION_NAME,
  ...(settings.tcp_keepalive > 0 ? { keepAlive: true, keepAliveInitialDelayMillis: keepAliveMs(settings) } : {}),
};
const rowOf = (r: pg.QueryResult): WorldRow => ({ id: r.rows[0].id, randomNumber: r.rows[0].randomnumber });

class PgPool implements Strategy {
  driver = "pg";
  summary = "a module-level pg.Pool: connections opened by the first queries, reused, closed after 10 s idle";
  timings = "acquire_ms: the pool's checkouts (waiting for a free client or connecting); query_ms: the rest";
  pool = new (timedPool(pg.Pool))({
    ...pgConfig,
    max: settings.pool_max,
    // pg applies it to a checkout: waiting for a free client and opening a new connection.
    connectionTimeoutMillis: settings.pool_timeout * 1000,
    // pg-pool closes a client idle that long (its default: 10 s, kept when idle_timeout is 0).
    ...(settings.idle_timeout > 0 ? { idleTimeoutMillis: settings.idle_timeout * 1000 } : {}),
  });

  constructor() {
    this.pool.on("connect", opened);
    this.pool.on("remove", () => (connectionsOpen -= 1));
    this.pool.on("error", () => {}); // an idle client's socket closed by the server: pg drops it
  }

  async world(id: number, params: Params, done: () => void): Promise<WorldRow> {
    if (!(params.hold && params.workMs > 0)) {
      const r = await this.pool.query(WORLD, [id]); // as most services do: checkout, query, release
      done();
      return rowOf(r);
    }
    const client = await this.pool.connect();
    try {
      const r = await client.query(WORLD, [id]);
      done();
      await sleep(params.workMs);
      return rowOf(r);
    } finally {
      client.release();
    }
  }

  async logShutdown(): Promise<void> {
    await this.pool.query(LOG_SHUTDOWN, [TARGET, process.pid]);
  }

  close(): Promise<void> {
    return this.pool.end();
  }

  figures(): Record<string, number> {
    const p = this.pool;
    return { pool_size: p.totalCount, pool_idle: p.idleCount, pool_waiting: p.waitingCount };
  }
}

class PgClient implements Strategy {
  driver = "pg";
  summary = "a pg.Client per request: connect() at its start, end() at its end";
  timings = "acquire_ms: the client's connect(); query_ms: the query on it";

  async withClient<T>(work: (client: pg.Client) => Promise<T>): Promise<T> {
    const client = new pg.Client({ ...pgConfig, connectionTimeoutMillis: settings.connect_timeout * 1000 });
    client.on("error", () => {}); // a socket error fails the query in flight; nothing else uses the client
    const acquired = startAcquire();
    await client.connect();
    acquired();
    opened();
    try {
      return await work(client);
    } finally {
      await client.end();
      connectionsOpen -= 1;
    }
  }

  world(id: number, params: Params, done: () => void): Promise<WorldRow> {
    return this.withClient(async (client) => {
      const r = await client.query(WORLD, [id]);
      done();
      if (params.hold) await sleep(params.workMs);
      return rowOf(r);
    });
  }

  async logShutdown(): Promise<void> {
    await this.withClient((client) => client.query(LOG_SHUTDOWN, [TARGET, process.pid]));
  }

  async close(): Promise<void> {}

  figures(): Record<string, number> {
    return {};
  }
}

// -- postgres.js ---------------------------------------------------------------------------------------
// postgres.js hands a query to a connection itself (an idle one, a new one, or pipelined behind others on a
// busy one), with no hook around that step. Its `debug` option is called the moment a query is written to a
// connection, with the connection's id and the query's parameters, the array the query keeps as
// `parameters`: the time it was asked until then is its acquire_ms. The first statement seen on a connection
// id since that connection last closed (`onclose`) counts it as opened; postgres.js reconnects a closed
// connection under the same id. (With a debug function postgres.js also keeps each query's call stack for
// its error messages.)
class PostgresJs implements Strategy {
  driver = "postgres.js";
  summary = "a module-level postgres() client: lazy, up to `max` connections, queries pipelined on busy ones";
  timings =
    "acquire_ms: until postgres.js wrote the query to a connection (opening one, or waiting for one: sql.reserve() " +
    "with hold=1); query_ms: the rest";
  sent = new WeakMap<object, number>();
  live = new Set<number>();
  sql = postgres(DSN, {
    max: settings.pool_max,
    connect_timeout: settings.connect_timeout,
    // postgres.js closes a connection idle that long (seconds; by default it never does).
    ...(settings.idle_timeout > 0 ? { idle_timeout: settings.idle_timeout } : {}),
    // postgres.js's first keepalive probe after that long idle (seconds; its default: 60, kept when 0).
    ...(settings.tcp_keepalive > 0 ? { keep_alive: keepAliveMs(settings) / 1000 } : {}),
    connection: { application_name: APPLICATION_NAME },
    debug: (connection: number, _query: string, parameters: unknown[]) => {
      this.sent.set(parameters, performance.now());
      if (!this.live.has(connection)) {
        this.live.add(connection);
        stats.connectionsOpened += 1;
      }
    },
    onclose: (connection: number) => this.live.delete(connection),
  } as postgres.Options<{}>);

  async world(id: number, params: Params, done: () => void): Promise<WorldRow> {
    if (!(params.hold && params.workMs > 0)) {
      const acquired = startAcquire();
      const query = this.sql`SELECT id, randomnumber FROM world WHERE id = ${id}`;
      const [row] = await query;
      acquired(this.sent.get((query as unknown as { parameters: object }).parameters));
      done();
      return { id: row.id, randomNumber: row.randomnumber };
    }
    const acquired = startAcquire();
    const reserved = await this.sql.reserve();
    acquired();
    try {
      const [row] = await reserved`SELECT id, randomnumber FROM world WHERE id = ${id}`;
      done();
      await sleep(params.workMs);
      return { id: row.id, randomNumber: row.randomnumber };
    } finally {
      reserved.release();
    }
  }

  async logShutdown(): Promise<void> {
    await this.sql`INSERT INTO shutdown_log (target, pid) VALUES (${TARGET}, ${process.pid})`;
  }

  close(): Promise<void> {
    return this.sql.end({ timeout: settings.shutdown_timeout });
  }

  figures(): Record<string, number> {
    return { connections_open: this.live.size };
  }
}

const STRATEGIES: Record<string, new () => Strategy> = {
  "pg-pool": PgPool,
  "pg-client": PgClient,
  "postgres-js": PostgresJs,
};
const strategyName = TARGET.replace(/^node-/, "");
if (!(strategyName in STRATEGIES)) {
  console.error(`connbench: unknown node target ${JSON.stringify(TARGET)}`);
  process.exit(2);
}
const strategy = new STRATEGIES[strategyName]();

await serve(
  TARGET,
  {
    family: "node",
    driver: strategy.driver,
    summary: strategy.summary,
    timings: strategy.timings,
    startup: async () => {},
    world: (id, params, stats) => stats.timed((done) => strategy.world(id, params, done)),
    exitHook: () => strategy.logShutdown(),
    close: () => strategy.close(),
    pool: () => ({ connections_open: connectionsOpen, ...strategy.figures() }),
  },
  settings,
  stats,
);
