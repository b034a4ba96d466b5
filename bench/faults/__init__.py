"""Field faults, one scenario module per fault, run in sequence by ``python -m bench.faults``.

A scenario is a module in this package that defines::

    FAULT: str                          # one line: what the fault is
    def run(work: Path) -> FaultRow:    # stage the fault with real processes, measure

Every module is found by name (``pkgutil``), so adding a fault is adding a file.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class FaultRow:
    """What one fault did to the events sent through it.

    ``lost`` and ``duplicated`` count events at the police (or the receiver the
    fault concerns); the latencies are panic -> police p99 while the fault lasts
    and after it ends; ``recover_s`` is from the fault's end to the first event
    delivered again (``None`` where the service never stopped).
    """

    fault: str
    sent: int
    lost: int
    duplicated: int
    p99_during_ms: float | None
    p99_after_ms: float | None
    recover_s: float | None
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        """The row as JSON-ready data."""
        return asdict(self)
