"""A power cut damages the journal: the gateway must start on it and deliver what it salvages.

A gateway journals panics and troubles (delivered), then more troubles while the
police broker is down (waiting); it stops, two pages in the middle of its
journal are overwritten with noise, and it starts again. ``lost`` counts the
waiting troubles that never reached the police (in the damaged pages: the
journal_damaged event reports them); ``recover_s`` is the restart to READY.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
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

FAULT = "journal damaged by a power cut (noise over two pages mid-file), gateway restarted"
PAGE = 4096
HEARTBEATS = 500


def garble_middle(path: Path) -> None:
    """Overwrite two pages in the middle of ``path`` with noise."""
    data = path.read_bytes()
    middle = len(data) // 2 // PAGE * PAGE
    path.write_bytes(data[:middle] + os.urandom(2 * PAGE) + data[middle + 2 * PAGE :])


def _journalled(config: Path) -> int:
    """Events the gateway has journalled, from its status file."""
    try:
        return int(json.loads((config.parent / "state" / "status.json").read_text())["events"])
    except (OSError, ValueError):
        return 0


def run(work: Path) -> FaultRow:
    """Journal, damage, restart; count and time what reaches the police."""
    return asyncio.run(_measure(work))


async def _measure(work: Path) -> FaultRow:
    with brokers(work) as (block, police):
        gw = gateway(work, block, police, status_interval_s=0.5)
        journal = gw.config.parent / "state" / "journal.sqlite3"
        gw.start()
        before, waiting, after = Traffic(), Traffic(), Traffic()
        async with panels_on(block) as panels:
            async with police_on(police) as platform:
                for i in range(HEARTBEATS):
                    await panels["S00002" if i % 2 else "S00008"].send("heartbeat")
                await send_panics(panels, before)
                await wait_for(
                    lambda: set(before.troubles) <= set(keys(platform, "low_battery")),
                    "troubles delivered",
                )
            police.stop()
            await send_panics(panels, waiting)
            total = HEARTBEATS + before.sent + waiting.sent
            await wait_for(lambda: _journalled(gw.config) >= total, "every event journalled")
        gw.stop()
        garble_middle(journal)
        police.start()  # not persistent: the platform subscribes before the gateway starts
        try:
            async with panels_on(block) as panels, police_on(police) as platform:
                recover_s = await asyncio.to_thread(gw.start)
                await wait_for(
                    lambda: any(d.body["kind"] == "journal_damaged" for d in platform.deliveries),
                    "journal_damaged",
                )
                [report] = [
                    d.body for d in platform.deliveries if d.body["kind"] == "journal_damaged"
                ]
                await send_panics(panels, after)
                await wait_for(lambda: set(after.panics) <= set(keys(platform, "panic")), "panics")
                waited = set(waiting.panics) | set(waiting.troubles)

                def arrived() -> set[tuple[str, int]]:
                    return set(keys(platform, "panic")) | set(keys(platform, "low_battery"))

                # Those in the damaged pages never come: wait a while, then count.
                with contextlib.suppress(TimeoutError):
                    await wait_for(lambda: waited <= arrived(), "the waiting events", 10)
                counts = report["attrs"]
                return FaultRow(
                    FAULT,
                    before.sent + waiting.sent + after.sent + HEARTBEATS,
                    len(waited - arrived()) + len(set(after.panics) - arrived()),
                    platform.duplicates,
                    None,
                    p99_ms(platform, after.panics),
                    round(recover_s, 2),
                    f"journal_damaged: {counts['salvaged']} salvaged, {counts['lost']} lost",
                )
        finally:
            gw.stop()
