"""Run every fault scenario in ``bench.faults`` in turn and print one table.

    python -m bench.faults              # every scenario
    python -m bench.faults disk_full    # only the named ones

Figures go to ``bench/results/faults-<UTC>.json`` and ``bench/results/faults-latest.json``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import tempfile
import time
import traceback
from pathlib import Path

import bench.faults as package
from bench.faults import FaultRow

RESULTS = Path(__file__).resolve().parents[1] / "results"


def scenario_names() -> list[str]:
    """Every scenario module of the package, in name order."""
    return sorted(
        m.name for m in pkgutil.iter_modules(package.__path__) if not m.name.startswith("_")
    )


def _cell(value: str | float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}" if isinstance(value, float) else str(value)


def table(rows: list[FaultRow]) -> str:
    """The rows as a Markdown table."""
    columns = [
        "fault",
        "sent",
        "lost",
        "duplicated",
        "p99_during_ms",
        "p99_after_ms",
        "recover_s",
        "note",
    ]
    lines = ["| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]
    for r in rows:
        cells = [
            r.fault,
            r.sent,
            r.lost,
            r.duplicated,
            r.p99_during_ms,
            r.p99_after_ms,
            r.recover_s,
        ]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + f" | {r.note} |")
    return "\n".join(lines)


def main() -> int:
    """Run the chosen scenarios; exit 1 if any lost or duplicated an event or failed to run."""
    parser = argparse.ArgumentParser(prog="python -m bench.faults", description=__doc__)
    parser.add_argument(
        "names", nargs="*", help=f"scenarios (default all): {', '.join(scenario_names())}"
    )
    args = parser.parse_args()
    rows: list[FaultRow] = []
    failed = False
    for name in args.names or scenario_names():
        module = importlib.import_module(f"bench.faults.{name}")
        with tempfile.TemporaryDirectory(prefix=f"lianfang-fault-{name}-") as work:
            try:
                row: FaultRow = module.run(Path(work))
            except Exception:  # noqa: BLE001 - one broken scenario must not hide the others' rows
                traceback.print_exc()
                row = FaultRow(
                    module.FAULT, 0, 0, 0, None, None, None, note="scenario failed, see above"
                )
                failed = True
        failed = failed or row.lost > 0 or row.duplicated > 0
        rows.append(row)
        print(table([row]).splitlines()[-1], flush=True)
    print()
    print(table(rows))
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    data = json.dumps([r.as_dict() for r in rows], indent=2)
    (RESULTS / f"faults-{stamp}.json").write_text(data)
    (RESULTS / "faults-latest.json").write_text(data)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
