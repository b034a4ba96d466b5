"""Percentiles, the targets, and the report: JSON files and a rich table."""

from __future__ import annotations

import json
import math
import operator
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

RESULTS = Path(__file__).resolve().parent / "results"


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by linear interpolation; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def summary_ms(seconds: Sequence[float]) -> dict[str, float | int]:
    """p50, p90, p99, max and mean in milliseconds of latencies given in seconds."""
    ms = [s * 1000 for s in seconds]
    return {
        "n": len(ms),
        "p50": round(percentile(ms, 50), 3),
        "p90": round(percentile(ms, 90), 3),
        "p99": round(percentile(ms, 99), 3),
        "max": round(max(ms), 3) if ms else math.nan,
        "mean": round(sum(ms) / len(ms), 3) if ms else math.nan,
    }


@dataclass(frozen=True)
class Target:
    """A target from the issue: a figure must be at most (or at least) ``limit``."""

    limit: float
    at_most: bool

    def verdict(self, value: float | None) -> str:
        """PASS or MISS (MISS when the figure is missing)."""
        if value is None or math.isnan(value):
            return "MISS"
        compare: Callable[[float, float], bool] = operator.le if self.at_most else operator.ge
        return "PASS" if compare(value, self.limit) else "MISS"

    def text(self, unit: str) -> str:
        """``≤ 5 ms`` or ``≥ 5,000 ev/s``."""
        return f"{'≤' if self.at_most else '≥'} {self.limit:,g} {unit}"


# DESIGN.md's targets (the 60 MB is its 500-shop figure; the bench runs the 87-shop block).
TARGETS: dict[str, Target] = {
    "notify_p99_ms": Target(10.0, at_most=True),
    "police_p99_ms": Target(50.0, at_most=True),
    "drain_events_per_s": Target(5000, at_most=False),
    "rss_load_mb": Target(60, at_most=True),
    "ready_median_s": Target(1.5, at_most=True),
    "wired_notify_p99_ms": Target(10.0, at_most=True),
    "modbus_cpu_pct": Target(5.0, at_most=True),
}


@dataclass(frozen=True)
class Row:
    """One line of the comparison: a figure for the gateway and for the floor."""

    key: str
    label: str
    unit: str
    gateway: float | None
    floor: float | None
    broker: str = ""
    """``stock`` or ``tuned``: the Mosquitto both figures were measured on."""

    @property
    def ratio(self) -> float | None:
        """Gateway over floor (how many times the floor's figure)."""
        if self.gateway is None or self.floor is None or self.floor == 0:
            return None
        if math.isnan(self.gateway) or math.isnan(self.floor):
            return None
        return self.gateway / self.floor

    def as_dict(self) -> dict[str, Any]:
        """JSON form, with the target and verdict when there is one."""
        target = TARGETS.get(self.key)
        out: dict[str, Any] = {
            "key": self.key,
            **({"broker": self.broker} if self.broker else {}),
            "label": self.label,
            "unit": self.unit,
            "gateway": self.gateway,
            "floor": self.floor,
            "ratio": None if self.ratio is None else round(self.ratio, 2),
        }
        if target is not None:
            out["target"] = f"{'<=' if target.at_most else '>='} {target.limit:g}"
            out["verdict"] = target.verdict(self.gateway)
        return out


def _num(value: float | None, unit: str) -> str:
    if value is None or math.isnan(value):
        return "—"
    if unit in ("ev/s", "events"):
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}" if abs(value) >= 1 else f"{value:.3f}"


def print_table(rows: list[Row], title: str, console: Console | None = None) -> None:
    """Every figure, its broker, the floor's on the same broker, the ratio, PASS/MISS."""
    # 120 columns when piped to a file: the default 80 wraps every label.
    console = console or Console(width=None if sys.stdout.isatty() else 120)
    table = Table(title=title, title_justify="left")
    table.add_column("figure")
    labelled = any(row.broker for row in rows)
    if labelled:
        table.add_column("broker")
    table.add_column("gateway", justify="right")
    table.add_column("floor (relay)", justify="right")
    table.add_column("gw/floor", justify="right")
    table.add_column("target", justify="right")
    table.add_column("", justify="center")
    for row in rows:
        target = TARGETS.get(row.key)
        verdict = target.verdict(row.gateway) if target else ""
        style = {"PASS": "green", "MISS": "bold red"}.get(verdict, "")
        table.add_row(
            f"{row.label} ({row.unit})",
            *([row.broker] if labelled else []),
            _num(row.gateway, row.unit),
            _num(row.floor, row.unit),
            "—" if row.ratio is None else f"{row.ratio:.2f}x",
            target.text(row.unit) if target else "",
            f"[{style}]{verdict}[/]" if verdict else "",
        )
    console.print(table)


def write_results(result: dict[str, Any], stamp: str) -> tuple[Path, Path]:
    """Write ``latency-<stamp>.json`` and ``latest.json`` under ``bench/results``."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, indent=2, allow_nan=False, default=str) + "\n"
    dated = RESULTS / f"latency-{stamp}.json"
    dated.write_text(text)
    latest = RESULTS / "latest.json"
    latest.write_text(text)
    return dated, latest


def finite(obj: Any) -> Any:  # noqa: ANN401 - walks any JSON-like value
    """The same JSON-like value with NaN and infinities replaced by None."""
    if isinstance(obj, float):
        return None if math.isnan(obj) or math.isinf(obj) else obj
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite(v) for v in obj]
    return obj
