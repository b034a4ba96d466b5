"""The SD card fills while panels publish: panics must go on, the rest must wait and follow.

The gateway's state directory is a 16 MB tmpfs; a file takes every free byte.
Panics and troubles are sent while the disk is full and again once the file is
deleted. ``recover_s`` runs from the deletion to the first held trouble at the police.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from bench.faults import FaultRow
from bench.faults._journal_stage import (
    Traffic,
    brokers,
    gateway,
    keys,
    p99_ms,
    panels_on,
    police_on,
    send_panics,
    wait_for,
)
from lab.disk import MountUnavailableError, fill, small_tmpfs

FAULT = "SD card full while panels publish (16 MB state tmpfs, 2 MB reserve)"
STATE_FS_MB = 16


def run(work: Path) -> FaultRow:
    """Fill the state directory's disk under load, then free it; count and time what arrives."""
    try:
        with small_tmpfs(work / "state-fs", STATE_FS_MB) as state:
            return asyncio.run(_measure(work, state))
    except MountUnavailableError as exc:
        return FaultRow(FAULT, 0, 0, 0, None, None, None, f"skipped: {exc}")


async def _measure(work: Path, state: Path) -> FaultRow:
    with brokers(work) as (block, police):
        gw = gateway(work, block, police, state_dir=str(state), journal={"reserve_mb": 2})
        gw.start()
        try:
            async with panels_on(block) as panels, police_on(police) as platform:
                filler = state / "runaway.log"
                await asyncio.to_thread(fill, filler)
                during, after = Traffic(), Traffic()
                await send_panics(panels, during)
                await wait_for(
                    lambda: set(during.panics) <= set(keys(platform, "panic")), "panics while full"
                )
                freed = time.perf_counter()
                filler.unlink()
                held = set(during.troubles)
                await wait_for(lambda: held & set(keys(platform, "low_battery")), "a held trouble")
                recovered = time.perf_counter() - freed
                await send_panics(panels, after)
                everything = held | set(after.troubles)
                await wait_for(
                    lambda: (
                        set(after.panics) <= set(keys(platform, "panic"))
                        and everything <= set(keys(platform, "low_battery"))
                    ),
                    "every event after",
                )
                panics, troubles = keys(platform, "panic"), keys(platform, "low_battery")
                sent = [*during.panics, *after.panics]
                lost = sum(k not in panics for k in sent) + len(everything - set(troubles))
                duplicated = sum(n - 1 for n in (panics + troubles).values())
                alive = gw.process is not None and gw.process.poll() is None
                # A planned reconnect (to fetch what was refused) is no link fault.
                link_troubles = sum(
                    d.body["device_id"].startswith("link:") for d in platform.unique
                )
                return FaultRow(
                    FAULT,
                    during.sent + after.sent,
                    lost,
                    duplicated,
                    p99_ms(platform, during.panics),
                    p99_ms(platform, after.panics),
                    round(recovered, 2),
                    ("daemon up throughout" if alive else "daemon died")
                    + f"; {link_troubles} link troubles at the police",
                )
        finally:
            gw.stop()
