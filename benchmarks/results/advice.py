"""The advice for a deployment, from a run's model (`connbench advise`; the command: benchmarks/cli/advise.py).

A deployment (replicas × workers per replica, or a serverless or edge runtime; max_connections; RTT to the
database; TLS; the peak rate and a p99 SLO) is checked against the model fitted on a run folder
(benchmarks/results/model.py): per strategy, whether it fits and why not, what p50 and p99 it should see at that
RTT, how many connections it holds at the database and how much of the database's CPU it takes. Only model
components whose held-out error is within 25 % are used; every number names the cells behind it. Throughput is
this machine's (another machine measured rates up to 1.6× apart, docs/trust.md): where a rate is used, it says so.
The queueing (Erlang C) is hand-written: a few lines no maintained library offers on its own.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from benchmarks.results.load import RunData
    from benchmarks.results.model import Component, Model

RUNTIMES = ("long-running", "serverless", "edge")
MAX_ERROR_RATE = 0.01  # a strategy failing more of its requests in the main scenario breaks
P_TAIL = 0.01  # the share of requests allowed to wait past the p99


@dataclass(frozen=True)
class Deployment:
    replicas: int = 1
    workers: int = 1
    runtime: str = "long-running"
    max_connections: int = 100
    reserved: int = 3
    rtt_ms: float = 0.0
    tls: bool = False
    rate: float = 100.0
    p99_ms: float | None = None
    cores: int | None = None

    @property
    def processes(self) -> int:
        return self.replicas * self.workers

    @property
    def available(self) -> int:
        return self.max_connections - self.reserved


def default_run(root: Path = Path("results")) -> Path:
    """The newest complete run folder under results/ (by its manifest's time), else results/reference."""
    found = []
    for p in root.iterdir() if root.is_dir() else []:
        manifest = p / "manifest.json"
        try:
            complete = manifest.is_file() and json.loads(manifest.read_text()).get("status") == "complete"
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            complete = False
        if complete and (p / "summary.csv").is_file():
            found.append((manifest.stat().st_mtime, p.name, p))
    return max(found)[2] if found else root / "reference"


# -- queueing ------------------------------------------------------------------------------------------
def erlang_c(servers: int, load: float) -> float:
    """The probability a request waits for one of `servers` connections at `load` Erlangs (M/M/c)."""
    if load >= servers:
        return 1.0
    b = 1.0  # Erlang B by its recurrence, then C from B
    for k in range(1, servers + 1):
        b = load * b / (k + load * b)
    return servers * b / (servers - load * (1 - b))


def wait_p99_ms(pool: int, rate: float, hold_ms: float) -> float:
    """The p99 of the wait for a connection in a pool of `pool` at `rate` req/s, each held `hold_ms` (M/M/c:
    P(wait > t) = C · exp(-(c - a) t / hold)); inf when the pool cannot carry the rate."""
    load = rate * hold_ms / 1000
    if load >= pool:
        return math.inf
    c = erlang_c(pool, load)
    return 0.0 if c <= P_TAIL else math.log(c / P_TAIL) * hold_ms / (pool - load)


def smallest_pool(rate: float, hold_ms: float, budget_ms: float, limit: int = 1000) -> int | None:
    """The smallest pool whose p99 wait at `rate` stays within `budget_ms` (None when none up to `limit`)."""
    for pool in range(1, limit + 1):
        if wait_p99_ms(pool, rate, hold_ms) <= budget_ms:
            return pool
    return None


# -- the advice ----------------------------------------------------------------------------------------
@dataclass
class Row:
    """One strategy (target and pooler placement) for the deployment."""

    target: str
    strategy: str
    pooler: str
    feasible: str = "yes"  # yes, no, unknown
    reasons: list[str] = field(default_factory=list)
    p50_ms: float | None = None
    p99_ms: float | None = None
    connections: float | None = None
    db_cores: float | None = None
    pool_max: int | None = None
    instances: int | None = None
    notes: list[str] = field(default_factory=list)
    evidence: dict[str, str] = field(default_factory=dict)

    def block(self, reason: str) -> None:
        self.feasible = "no"
        self.reasons.append(reason)


@dataclass
class PoolSize:
    target: str
    rate_per_process: float
    hold_ms: float
    pool_max: int | None
    prisma: int
    hikari: int
    closer: str
    evidence: str
    unconstrained_rps: float
    cores: int
    note: str = ""


@dataclass
class Advice:
    run: str
    deployment: Deployment
    rows: list[Row]
    pool: PoolSize | None
    recommendation: str
    notes: list[str]

    def to_json(self) -> dict[str, Any]:
        return {"run": self.run, "deployment": asdict(self.deployment), "rows": [asdict(r) for r in self.rows],
                "pool": asdict(self.pool) if self.pool else None, "recommendation": self.recommendation,
                "notes": self.notes}  # fmt: skip


def _breaks(run: RunData, target: str) -> str | None:
    """Why a target breaks under the main scenario's load, from its cells (None when it does not)."""
    from benchmarks.results.load import MAIN_SCENARIO

    cells = run.cells(MAIN_SCENARIO, target)
    cells = cells[cells["valid"]]
    if cells.empty:
        return None
    cell = cells.iloc[0]
    if not cell["rps"]:
        return f"completes no request ({cell['cell_id']})"
    if cell["error_rate"] > MAX_ERROR_RATE:
        classes = ", ".join(sorted(cell["errors"])) or "errors"
        users = int(cell["users"])
        return f"fails {cell['error_rate']:.0%} of requests ({classes}) at {users} users ({cell['cell_id']})"
    return None


def pool_sizing(model: Model, d: Deployment, cores: int) -> PoolSize | None:
    """The smallest pool per process that reaches the rate within the SLO at the user's RTT (Little's law and the
    M/M/c wait, with the hold time measured on the run), beside Prisma's and HikariCP's formulas."""
    comp = next((c for c in model.components if c.name == "pool-ceiling" and c.used), None)
    if comp is None or d.runtime != "long-running":  # serverless and edge: one request per instance
        return None
    p = comp.params
    hold = p["hold_ms"] + p["round_trips"] * (d.rtt_ms - p["base_rtt_ms"])
    per_process = d.rate / d.processes
    base = _latency(model, comp.target, "", d, "latency-p99")
    budget = (d.p99_ms - base[0]) if d.p99_ms is not None and base else (d.p99_ms if d.p99_ms is not None else hold)
    pool = smallest_pool(per_process, hold, budget) if budget > 0 else None
    note = "" if pool is not None else (
        f"the p99 without any wait ({base[0]:.1f} ms) already misses the SLO" if budget <= 0 and base
        else "no pool up to 1000 connections keeps the wait within the budget"
    )  # fmt: skip
    prisma, hikari = cores * 2 + 1, cores * 2  # HikariCP: + effective spindles, 0 for a cached data set
    closer = "—"
    if pool is not None:
        gap = {f"Prisma's {prisma}": abs(prisma - pool), f"HikariCP's {hikari}": abs(hikari - pool)}
        best = min(gap.values())
        closer = " and ".join(k for k, v in gap.items() if v == best)
    return PoolSize(comp.target, per_process, hold, pool, prisma, hikari, closer, comp.evidence(),
                    p["unconstrained_rps"], cores, note)  # fmt: skip


def _latency(model: Model, target: str, pooler: str, d: Deployment, name: str) -> tuple[float, Component] | None:
    comp = model.find(name, target, pooler, d.tls)
    if comp is None or not comp.used:
        return None
    p = comp.params
    return p["base_ms"] + p["round_trips"] * (d.rtt_ms - p["base_rtt_ms"]), comp


def plan_row(model: Model, d: Deployment, target: str, strategy: str, pooler: str, pool: PoolSize | None) -> Row:
    """One strategy's row: its numbers at the deployment and why it does or does not fit."""
    from benchmarks.results import model as M
    from benchmarks.results.load import MAIN_SCENARIO, family_of

    run = model.run
    row = Row(target, strategy, pooler or "—")
    keeps = strategy in M.KEEPS_CLIENT
    if family_of(target) == "worker" and d.runtime != "edge":
        row.block("a Workers target: it runs on the edge runtime (workerd)")
    if d.runtime == "edge" and keeps:
        seen = run.cells(MAIN_SCENARIO, "worker-global")
        seen = seen[seen["valid"] & (seen["rps"] == 0)]
        row.block("keeps a client across requests, which fails when a later request on an edge isolate reuses it"
                  + (f" (worker-global: {seen['cell_id'].iloc[0]})" if len(seen) and target != "worker-global"
                     else ""))  # fmt: skip
    broken = _breaks(run, target)
    if broken and (d.runtime != "serverless" or not keeps or "no request" in broken):
        row.block(f"breaks under load: {broken}")
    elif broken:
        row.notes.append(f"one request per instance avoids the concurrency measured here: {broken}")

    for name, attr in (("latency-p50", "p50_ms"), ("latency-p99", "p99_ms")):
        got = _latency(model, target, pooler, d, name)
        if got is not None:
            setattr(row, attr, got[0])
            comp = got[1]
            row.evidence[attr] = comp.evidence()
            note = f"latency from cells {'with' if comp.tls else 'without'} TLS (the run has no other)"
            if comp.tls != d.tls and note not in row.notes:
                row.notes.append(note)
        else:
            unused = model.find(name, target, pooler, d.tls)
            row.evidence[attr] = (
                f"not used: held-out error {unused.error:.0%} ({unused.evidence()})"
                if unused is not None and unused.error is not None
                else "absent: the run has no cells at two RTTs for it"
            )  # fmt: skip

    if d.runtime != "long-running" and row.p50_ms is not None:
        row.instances = max(1, math.ceil(d.rate * row.p50_ms / 1000))  # Little's law: requests in flight
    via = M.BUILT_IN[target].via_pgbouncer if target in M.BUILT_IN else False
    pool_comp = model.find("connections", target, pooler, d.tls)
    run_pool = run.summary.loc[run.summary["target"] == target, "pool_max"].dropna()
    setting = int(run_pool.iloc[0]) if len(run_pool) else None
    if strategy in M.APP_POOLS:
        if d.runtime == "long-running":
            if pool is not None and pool.target == target and pool.pool_max is not None:
                row.pool_max = pool.pool_max
            elif setting:  # no pool-size cells for it: the run's setting, or less to fit max_connections
                row.pool_max = min(setting, d.available // d.processes) or setting
                row.notes.append(f"pool_max: the run's {setting}" + (
                    ", cut to fit max_connections" if row.pool_max < setting else ""
                ) + "; whether it carries the rate is not checked (no pool-size cells)")  # fmt: skip
            row.connections = d.processes * row.pool_max if row.pool_max else None
        else:
            row.pool_max = 1  # one request at a time per instance
            row.connections = row.instances
            if strategy == "pool-eager" and setting and setting > 1 and row.instances:
                row.notes.append(f"an eager pool opens pool_max per instance: at the run's {setting}, "
                                 f"{row.instances * setting} connections")  # fmt: skip
        if pool_comp is not None:
            row.evidence["connections"] = pool_comp.evidence()
    elif via or keeps:
        if pool_comp is not None and pool_comp.used and "connections" in pool_comp.params:
            each = pool_comp.params["connections"]
            copies = d.replicas if via and pooler == "near-app" and d.runtime == "long-running" else 1
            if not via:  # a persistent or global client per process (per instance on serverless)
                copies = d.processes if d.runtime == "long-running" else (row.instances or 0)
            row.connections = each * copies if copies else None
            row.evidence["connections"] = pool_comp.evidence()
            if via and pooler == "near-app" and d.runtime == "long-running":
                row.notes.append("one PgBouncer next to each replica: its server pool per replica")
    elif row.p50_ms is not None:  # a client per request: at most the requests in flight hold one each
        row.connections = d.rate * row.p50_ms / 1000
        row.evidence["connections"] = "requests in flight: rate × p50 (Little's law)" + (
            f"; the session model: {pool_comp.evidence()}" if pool_comp is not None else ""
        )

    cpu = model.find("db-cpu", target, pooler, d.tls)
    if cpu is not None and cpu.used:
        row.db_cores = cpu.params["cpu_ms_per_request"] * d.rate / 1000
        row.evidence["db_cores"] = cpu.evidence()

    if row.connections is not None and row.connections > d.available:
        row.block(f"needs {math.ceil(row.connections)} connections, {d.available} available "
                  f"(max_connections {d.max_connections} − {d.reserved} reserved)")  # fmt: skip
    if d.p99_ms is not None and row.p99_ms is not None and row.p99_ms > d.p99_ms:
        row.block(f"misses the SLO: p99 {row.p99_ms:.0f} ms > {d.p99_ms:g} ms")
    if d.runtime == "long-running" and strategy in M.APP_POOLS and pool and pool.target == target:
        if pool.rate_per_process > pool.unconstrained_rps:
            row.block(f"{pool.rate_per_process:.0f} req/s per process; one served at most "
                      f"{pool.unconstrained_rps:.0f} here (this machine's throughput): add workers")  # fmt: skip
    # A verdict needs the connections, and the p99 when there is an SLO to meet.
    missing = []
    if row.connections is None:
        per_request = not keeps and not via and row.p50_ms is None
        missing.append("latency (a client per request holds a connection per request in flight)" if per_request
                       else "connections")  # fmt: skip
    if d.p99_ms is not None and row.p99_ms is None:
        missing.insert(0, "p99")
    if row.feasible == "yes" and missing:
        row.feasible = "unknown"
        row.reasons.append("no checked " + " or ".join(missing))
    return row


def _rank(r: Row) -> tuple[float, float]:
    """Lower is better: the predicted p99, else the p50, else last; then the fewer connections."""
    latency = r.p99_ms if r.p99_ms is not None else r.p50_ms
    return (math.inf if latency is None else latency, r.connections if r.connections is not None else math.inf)


def advise(run_dir: Path, d: Deployment) -> Advice:
    from benchmarks.results import model as M
    from benchmarks.results.load import load_run

    run = load_run(run_dir)
    model = M.fit(run)
    cores = d.cores or (int(run.cores) if isinstance(run.cores, int | float) else 2)
    pool = pool_sizing(model, d, cores)
    s = run.summary[run.summary["valid"] & run.summary["scenario"].isin(M.LOAD_SCENARIOS)]
    keys = s[["target", "strategy", "pooler"]].fillna("").drop_duplicates()
    rows = [plan_row(model, d, str(k.target), str(k.strategy), str(k.pooler), pool) for k in keys.itertuples()]
    order = {"yes": 0, "unknown": 1, "no": 2}
    rows.sort(key=lambda r: (order[r.feasible], *_rank(r)))
    notes = [
        f"From {run.dir} ({run.run_id}, {run.cores} cores): latency bases are closed-loop cells of this machine "
        "(8 users); round trips, connections and database CPU per request carry to another machine, rates do not."
    ]
    return Advice(str(run.dir), d, rows, pool, recommend(rows, d, pool), notes)


def recommend(rows: list[Row], d: Deployment, pool: PoolSize | None) -> str:
    """The feasible row with the lowest predicted p99 (else p50; then the fewest connections), with its evidence."""
    ok = [r for r in rows if r.feasible == "yes"]
    if not ok:
        return "No strategy of this run fits with every number checked: see the reasons per row."
    best = min(ok, key=_rank)
    text = f"{best.target}" + (f" with PgBouncer {best.pooler}" if best.pooler != "—" else "") + ":"
    for attr, label in (("p50_ms", "p50"), ("p99_ms", "p99")):
        value = getattr(best, attr)
        text += (f" {label} {value:.1f} ms at {d.rtt_ms:g} ms RTT" if value is not None
                 else f" {label} not predicted") + f" ({best.evidence.get(attr)});"  # fmt: skip
    text += (
        f" {math.ceil(best.connections or 0)} connections of {d.available} "
        f"({best.evidence.get('connections', 'settings')})"
    )
    if best.pool_max:
        text += f"; pool_max {best.pool_max} per {'process' if d.runtime == 'long-running' else 'instance'}"
    if best.db_cores is not None:
        text += f"; database CPU {best.db_cores:.2f} cores at {d.rate:g} req/s ({best.evidence.get('db_cores')})"
    return text + "."
