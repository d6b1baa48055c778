"""The run's thresholds (`connbench run --threshold`), as the manifest records them: held, or breached by
which cells, with their values."""

from __future__ import annotations

from benchmarks.results import fmt
from benchmarks.results.load import RunData

LISTED = 3  # breaching cells named in the sentence, the rest counted


def sentences(run: RunData) -> list[str]:
    """One sentence per threshold given to the run (none when the run had none)."""
    out = []
    for r in run.manifest.get("thresholds") or []:
        n, bad = r["cells_checked"], r["breaches"]
        if not n:
            out.append(f"Threshold {r['threshold']}: no valid cell measured {r['metric']}.")
        elif not bad:
            out.append(f"Threshold {r['threshold']} held in all {n} valid cells that measured it.")
        else:
            named = ", ".join(f"{b['cell_id']} ({fmt.num(b['value'], r['unit'])})" for b in bad[:LISTED])
            more = f" and {len(bad) - LISTED} more" if len(bad) > LISTED else ""
            out.append(f"Threshold {r['threshold']} breached in {len(bad)} of {n} valid cells: {named}{more}.")
    return out
