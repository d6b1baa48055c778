"""How the report writes a number: readable precision, ms for small seconds, ratios, shares and error classes.

Pure functions of values (no run, no dataframe), used by the sentences and the figures' labels alike.
"""

from __future__ import annotations

from typing import Any

import pandas as pd


def missing(v: Any) -> bool:
    return v is None or bool(pd.isna(v))


def in_ms(v: float, unit: str) -> bool:
    """Is `v` seconds better read in milliseconds (2 ms, not 2.0e-03 s)?"""
    return unit == "s" and 0 < abs(v) < 0.1


def num(v: float, unit: str = "") -> str:
    """A number at a readable precision: 37,624 / 314 / 2.7 / 0.21 / 7.8e-05."""
    if missing(v):
        return "n/a"
    a = abs(v)
    if in_ms(v, unit):
        return num(v * 1000, "ms")
    if a >= 100:
        text = f"{v:,.0f}"
    elif a >= 10:
        text = f"{v:.1f}".rstrip("0").rstrip(".")
    elif a >= 0.01 or a == 0:
        text = f"{v:.2f}".rstrip("0").rstrip(".")
    else:
        text = f"{v:.1e}"
    return f"{text} {unit}".rstrip() if unit else text


def pct(v: float) -> str:
    """A share as a whole percentage: '77 %'."""
    return f"{100 * v:.0f} %"


def ratio_text(r: float) -> str:
    if r >= 10:
        return f"{r:.0f}×"
    if r >= 1:
        return f"{r:.1f}×"
    return f"{r:.2f}×"


def ms_text(v: float) -> str:
    """Milliseconds, as seconds from 1,000 ms on."""
    return "n/a" if missing(v) else (f"{num(v / 1000)} s" if v >= 1000 else f"{num(v)} ms")


def per_request_text(v: float | None) -> str:
    """Sessions per request, readable: '1.00', '0.09', '1 per 12,888 requests', '0'."""
    if v is None or missing(v):
        return "n/a"
    if v == 0:
        return "0"
    if v < 0.01:
        return f"1 per {1 / v:,.0f} requests"
    return f"{v:.2f}"


def errors_text(errors: dict[str, int], top: int = 3) -> str:
    """The most frequent error classes with their counts: 'PoolTimeout 281, +2 more'."""
    items = list(errors.items())
    text = ", ".join(f"{k} {v:,}" for k, v in items[:top])
    return text + (f", +{len(items) - top} more" if len(items) > top else "")
