"""model.csv: a model per target, fitted to some cells of a run and checked on cells it did not see.

Absolute throughput does not travel across machines (docs/trust.md); round trips, sessions per request,
connections and PostgreSQL's CPU per request do. So the model is built from those, and every component is fitted
on named cells and then checked against every other cell of the run that it can predict:

- latency: p50 (and p99) ≈ base + round trips × RTT. The base is the loopback cell of a scenario that ran at two
  RTTs or more (`distance`); the round trips come from elsewhere, never from the far cells: baseline.csv's round
  trips per new connection (pgbench -C, per TLS mode) for a client that connects per request, plus what the
  driver spends on an open connection (QUERY_ROUND_TRIPS). The far cells are held out.
- pool ceiling (Little's law): rps ≤ pool_max × workers / hold, the hold being the time a request keeps its
  connection (hold = the loopback hold + the query's round trips × RTT). The hold is fitted on the smallest pool
  on loopback, the unconstrained rate on the largest; every other pool size and RTT is held out.
- connections at the database: workers × pool_max for an application pool (against conn_peak, nothing fitted);
  connect rate × session time for a client per request (against conn_mean; the share of p50 a request holds its
  session is fitted on one cell); the server pool of a pooler or a persistent client, fitted on one cell.
- database CPU: db_cpu_ms_per_request of one cell × rps (against db_cpu_pct of the others).

A component whose held-out error (the median of its cells' absolute relative errors) is over ERROR_LIMIT says so
(`used` false) and `connbench advise` does not use it; a component the run has no cells to fit or check is absent.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.results.load import MAIN_SCENARIO, RunData, load_run
from benchmarks.results.path import connect_round_trips as path_round_trips
from benchmarks.results.path import path_scenarios
from benchmarks.results.runfolder import write_csv_atomic
from targets.registry import BUILT_IN

FILE = "model.csv"
ERROR_LIMIT = 0.25  # a component whose held-out error is above this share is not used for advice
MAX_ERROR_RATE = 0.01  # a cell failing more requests than this is not a cell of the model
LOAD_SCENARIOS = ("steady", "distance", "pool-size", "arrival", "capacity")  # cells of steady load, no fault
POOL_SCENARIO = "pool-size"
SHOWN = 2  # held-out cell ids an evidence line names before "and N more"

# Strategies whose client stays open across requests (a pool, a persistent or global connection); the others open
# a client connection per request (to PostgreSQL or, for a pgbouncer target, to PgBouncer).
KEEPS_CLIENT = {
    "global", "pool-eager", "pool-lazy", "edge-global", "django-persistent", "django-pool", "node-pg-pool",
    "node-postgres-js", "prisma-global", "prisma-connect", "sqlalchemy-queue", "sqlalchemy-pre-ping",
    "sqlalchemy-queue-pgbouncer", "worker-global",
}  # fmt: skip
# Application pools: one pool of pool_max connections per process.
APP_POOLS = {"pool-eager", "pool-lazy", "django-pool", "node-pg-pool", "node-postgres-js", "prisma-global",
             "prisma-connect", "sqlalchemy-queue", "sqlalchemy-pre-ping"}  # fmt: skip

MODEL_COLUMNS = [
    "component", "target", "strategy", "pooler", "tls", "quantity", "fitted_on", "held_out", "rtt_ms", "pool_max",
    "predicted", "measured", "rel_error", "unit", "over_limit", "component_error", "used", "note",
]  # fmt: skip


def query_round_trips(target: str) -> int:
    """Round trips a request spends on an open connection, by what its driver sends (measured alone at 20 ms,
    docs/findings.md): asyncpg prepares then executes a new statement, and its pool resets a connection on
    release (2); without its statement cache, behind PgBouncer, 3; psycopg, node-postgres and postgres.js send
    one extended-protocol exchange (1)."""
    t = BUILT_IN.get(target)
    if t is not None and t.driver == "asyncpg":
        return 3 if t.via_pgbouncer else 2
    return 1


def connects_per_request(strategy: str) -> bool:
    return strategy not in KEEPS_CLIENT


def request_round_trips(target: str, strategy: str, pooler: str, connect_rt: float | None) -> float | None:
    """Round trips a request crosses the distance: a new connection's (when it opens one across the distance:
    not when PgBouncer sits next to the app) plus its queries'. None for a target connbench does not know or when
    the run measured no round trips per connection for that TLS mode."""
    if target not in BUILT_IN:
        return None
    connect = 0.0
    if connects_per_request(strategy) and pooler != "near-app":
        if connect_rt is None:
            return None
        connect = connect_rt
    return connect + query_round_trips(target)


def connect_round_trips(run: RunData) -> dict[bool, float]:
    """baseline.csv's round trips per new connection (path.connect_round_trips), per TLS mode."""
    rows = path_round_trips(run)
    return {bool(r.tls): float(r.measured) for r in rows.itertuples()}


@dataclass
class Component:
    """One fitted part of the model for one target and path, with its predictions on held-out cells."""

    name: str  # latency-p50, latency-p99, pool-ceiling, connections, db-cpu
    target: str
    strategy: str
    pooler: str
    tls: bool
    quantity: str  # the summary.csv column it predicts
    unit: str
    fitted_on: list[str]
    params: dict[str, float]
    note: str = ""
    rows: list[dict[str, Any]] = field(default_factory=list)

    def check(self, cell: pd.Series, predicted: float) -> None:
        measured = float(cell[self.quantity])
        err = (predicted - measured) / measured if measured else math.nan
        self.rows.append({"held_out": str(cell["cell_id"]), "rtt_ms": float(cell["rtt_ms"]),
                          "pool_max": cell.get("pool_max"), "predicted": predicted, "measured": measured,
                          "rel_error": err})  # fmt: skip

    @property
    def error(self) -> float | None:
        """The held-out error: the median of the held-out cells' absolute relative errors (None: none held out)."""
        errs = [abs(r["rel_error"]) for r in self.rows if not math.isnan(r["rel_error"])]
        return float(pd.Series(errs).median()) if errs else None

    @property
    def worst(self) -> float | None:
        errs = [abs(r["rel_error"]) for r in self.rows if not math.isnan(r["rel_error"])]
        return max(errs) if errs else None

    @property
    def used(self) -> bool:
        return self.error is not None and self.error <= ERROR_LIMIT

    @property
    def held_out(self) -> list[str]:
        return [r["held_out"] for r in self.rows]

    def evidence(self) -> str:
        """'fitted on A; held-out error 12 % on B, C' for the advice's citations."""
        err = self.error
        text = f"fitted on {', '.join(self.fitted_on) or 'settings only'}"
        if err is None:
            return text + "; nothing held out"
        cells = self.held_out
        shown = ", ".join(cells[:SHOWN]) + (f" and {len(cells) - SHOWN} more" if len(cells) > SHOWN else "")
        return text + f"; held-out error {err:.0%} on {shown}"


@dataclass
class Model:
    """Every component fitted on a run."""

    run: RunData
    components: list[Component]

    def find(self, name: str, target: str, pooler: str = "", tls: bool | None = None) -> Component | None:
        """The component for a target and path: the same TLS mode when there is one, else the other's."""
        found = [c for c in self.components if c.name == name and c.target == target and c.pooler == pooler]
        if tls is not None:
            found.sort(key=lambda c: c.tls != tls)
        return found[0] if found else None

    def table(self) -> pd.DataFrame:
        rows = []
        for c in self.components:
            err = c.error
            for r in c.rows:
                over = not math.isnan(r["rel_error"]) and abs(r["rel_error"]) > ERROR_LIMIT
                rows.append({"component": c.name, "target": c.target, "strategy": c.strategy, "pooler": c.pooler,
                             "tls": c.tls, "quantity": c.quantity, "fitted_on": " ".join(c.fitted_on), **r,
                             "unit": c.unit, "over_limit": over, "component_error": err, "used": c.used,
                             "note": c.note})  # fmt: skip
        return pd.DataFrame(rows, columns=MODEL_COLUMNS)


def model_cells(run: RunData) -> pd.DataFrame:
    """The valid cells of steady load that served requests, with the path columns filled."""
    s = run.summary
    s = s[s["valid"] & s["scenario"].isin(LOAD_SCENARIOS) & (s["rps"].fillna(0) > 0)]
    s = s[s["error_rate"].fillna(0) <= MAX_ERROR_RATE].copy()
    s["rtt_ms"] = s["rtt_ms"].fillna(0).astype(float)
    s["tls"] = s["tls"].fillna(False).astype(bool)
    s["pooler"] = s["pooler"].fillna("")
    return s


def _first(g: pd.DataFrame, column: str) -> str:
    return str(g[column].iloc[0])


def fit_latency(run: RunData, cells: pd.DataFrame) -> list[Component]:
    """p50 and p99 ≈ the loopback cell's + round trips × RTT, checked on the same cells at larger RTTs."""
    connect = connect_round_trips(run)
    cells = cells[cells["scenario"].isin(path_scenarios(run))]
    out = []
    for (_, target, pooler, tls, _), g in cells.groupby(["scenario", "target", "pooler", "tls", "users"], sort=False):
        near = g["rtt_ms"].min()
        base, far = g[g["rtt_ms"] == near], g[g["rtt_ms"] > near]
        rt = request_round_trips(str(target), _first(g, "strategy"), str(pooler), connect.get(bool(tls)))
        if far.empty or rt is None:
            continue
        for q, name in (("latency_p50_ms", "latency-p50"), ("latency_p99_ms", "latency-p99")):
            c = Component(name, str(target), _first(g, "strategy"), str(pooler), bool(tls), q, "ms",
                          list(base["cell_id"]), {"base_ms": float(base[q].median()), "round_trips": rt,
                                                  "base_rtt_ms": float(near), "users": float(g["users"].iloc[0])},
                          note=f"{rt:.2f} round trips per request (baseline.csv, the driver): not fitted")  # fmt: skip
            for _, cell in far.dropna(subset=[q]).iterrows():
                c.check(cell, c.params["base_ms"] + rt * (cell["rtt_ms"] - near))
            out.append(c)
        slope = _slope_check(g, str(target), str(pooler), bool(tls)) if g["rtt_ms"].nunique() >= 3 else None
        if slope is not None:
            out.append(slope)
    return out


def _slope_check(g: pd.DataFrame, target: str, pooler: str, tls: bool) -> Component | None:
    """With three RTTs or more, a second check that needs no round-trip count: base and slope fitted (least
    squares) on every RTT but the largest, p50 predicted at the largest."""
    top = g["rtt_ms"].max()
    fit_on, held = g[g["rtt_ms"] < top].dropna(subset=["latency_p50_ms"]), g[g["rtt_ms"] == top]
    if fit_on["rtt_ms"].nunique() < 2:
        return None
    slope, base = np.polyfit(fit_on["rtt_ms"], fit_on["latency_p50_ms"], 1)
    c = Component("latency-p50-slope", target, _first(g, "strategy"), pooler, tls, "latency_p50_ms", "ms",
                  list(fit_on["cell_id"]), {"base_ms": float(base), "round_trips": float(slope), "base_rtt_ms": 0.0},
                  note=f"slope {slope:.2f} round trips per request, fitted on the smaller RTTs")  # fmt: skip
    for _, cell in held.dropna(subset=["latency_p50_ms"]).iterrows():
        c.check(cell, float(base + slope * cell["rtt_ms"]))
    return c


def pool_ceiling(params: dict[str, float], pool_max: float, workers: float, rtt_ms: float, users: float) -> float:
    """Little's law: the rate a pool (and, in a closed loop, the users) can carry, capped by the unconstrained
    rate. Throughput figures are this machine's."""
    hold = params["hold_ms"] + params["round_trips"] * (rtt_ms - params["base_rtt_ms"])
    ceiling = min(pool_max * workers, users if users > 0 else math.inf) * 1000 / hold
    return min(ceiling, params["unconstrained_rps"])


def fit_pool(cells: pd.DataFrame) -> list[Component]:
    """The hold time on the smallest pool at the smallest RTT, the unconstrained rate on the largest pool there;
    every other pool size and RTT is held out."""
    s = cells[(cells["scenario"] == POOL_SCENARIO) & cells["pool_max"].notna()]
    out = []
    for (target, pooler, tls, users), g in s.groupby(["target", "pooler", "tls", "users"], sort=False):
        near = g["rtt_ms"].min()
        ref = g[g["rtt_ms"] == near]
        sizes = sorted(ref["pool_max"].unique())
        if len(sizes) < 2:
            continue
        small, large = ref[ref["pool_max"] == sizes[0]], ref[ref["pool_max"] == sizes[-1]]
        hold = float((small["pool_max"] * small["workers"] * 1000 / small["rps"]).median())
        rt = query_round_trips(str(target))
        params = {"hold_ms": hold, "unconstrained_rps": float(large["rps"].median()), "round_trips": float(rt),
                  "base_rtt_ms": float(near), "users": float(users)}  # fmt: skip
        c = Component("pool-ceiling", str(target), _first(g, "strategy"), str(pooler), bool(tls), "rps", "req/s",
                      [*small["cell_id"], *large["cell_id"]], params,
                      note=f"hold {hold:.2f} ms + {rt} round trips × RTT; throughput is this machine's")  # fmt: skip
        fitted = set(c.fitted_on)
        for _, cell in g[~g["cell_id"].isin(fitted)].iterrows():
            c.check(cell, pool_ceiling(params, cell["pool_max"], cell["workers"], cell["rtt_ms"], users))
        out.append(c)
    return out


def _fit_cell(g: pd.DataFrame) -> pd.Series:
    """The cell a per-cell component is fitted on: the main scenario's first at the smallest RTT, else the first
    cell at the smallest RTT."""
    near = g[g["rtt_ms"] == g["rtt_ms"].min()]
    main = near[near["scenario"] == MAIN_SCENARIO]
    return (main if len(main) else near).iloc[0]


def fit_connections(cells: pd.DataFrame) -> list[Component]:
    """Connections at the database, per target and path."""
    out = []
    for (target, pooler, tls), g in cells.groupby(["target", "pooler", "tls"], sort=False):
        strategy = _first(g, "strategy")
        via = BUILT_IN[str(target)].via_pgbouncer if target in BUILT_IN else False
        fit = _fit_cell(g)
        key = (str(target), strategy, str(pooler), bool(tls))
        if strategy in APP_POOLS and not via:
            c = Component("connections", *key, "conn_peak", "connections", [], {},
                          note="workers × pool_max: settings, nothing fitted")  # fmt: skip
            for _, cell in g.dropna(subset=["conn_peak", "pool_max"]).iterrows():
                c.check(cell, float(cell["workers"] * cell["pool_max"]))
        elif connects_per_request(strategy) and not via:
            g = g.dropna(subset=["conn_mean", "sessions_per_request", "latency_p50_ms"])
            if g.empty or not fit["conn_mean"] or pd.isna(fit["latency_p50_ms"]):
                continue
            share = float(fit["conn_mean"] / (fit["rps"] * fit["sessions_per_request"] * fit["latency_p50_ms"] / 1000))
            c = Component("connections", *key, "conn_mean", "connections", [str(fit["cell_id"])],
                          {"session_share": share}, note=f"rps × sessions per request × {share:.2f} × p50")  # fmt: skip
            for _, cell in g[g["cell_id"] != fit["cell_id"]].iterrows():
                c.check(cell, cell["rps"] * cell["sessions_per_request"] * share * cell["latency_p50_ms"] / 1000)
        else:  # a pooler's server pool or one persistent client per thread: as many as the fitted cell held
            if pd.isna(fit["conn_peak"]):
                continue
            c = Component("connections", *key, "conn_peak", "connections", [str(fit["cell_id"])],
                          {"connections": float(fit["conn_peak"])}, note="the server pool a cell held")  # fmt: skip
            for _, cell in g[g["cell_id"] != fit["cell_id"]].dropna(subset=["conn_peak"]).iterrows():
                c.check(cell, float(fit["conn_peak"]))
        out.append(c)
    return out


def fit_cpu(cells: pd.DataFrame) -> list[Component]:
    """PostgreSQL's CPU: one cell's milliseconds per request × each other cell's rate (% of one core)."""
    out = []
    cells = cells.dropna(subset=["db_cpu_ms_per_request", "db_cpu_pct"])
    for (target, pooler, tls), g in cells.groupby(["target", "pooler", "tls"], sort=False):
        fit = _fit_cell(g)
        ms = float(fit["db_cpu_ms_per_request"])
        c = Component("db-cpu", str(target), _first(g, "strategy"), str(pooler), bool(tls), "db_cpu_pct",
                      "% of a core", [str(fit["cell_id"])], {"cpu_ms_per_request": ms},
                      note=f"{ms:.3g} ms of PostgreSQL CPU per request × rps")  # fmt: skip
        for _, cell in g[g["cell_id"] != fit["cell_id"]].iterrows():
            c.check(cell, ms * cell["rps"] / 10)
        out.append(c)
    return out


def fit(run: RunData) -> Model:
    """Every component the run has the cells for."""
    cells = model_cells(run)
    parts: Iterable[Component] = [
        *fit_latency(run, cells),
        *fit_pool(cells),
        *fit_connections(cells),
        *fit_cpu(cells),
    ]
    return Model(run, list(parts))


def write(run_dir: Path, run: RunData | None = None) -> Path:
    """Write run_dir/model.csv (one row per held-out prediction); return its path."""
    run = run if run is not None else load_run(run_dir)
    table = fit(run).table()
    path = Path(run_dir) / FILE
    rows = [{k: ("" if v is None or (isinstance(v, float) and math.isnan(v)) else v) for k, v in r.items()}
            for r in table.to_dict("records")]  # fmt: skip
    write_csv_atomic(path, MODEL_COLUMNS, rows)
    return path
