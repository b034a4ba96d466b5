"""kill -9 in the middle of escalations: after the restart each still escalates, once, on time.

Five panics start escalation timers (``after_s`` 5 s); the gateway is killed
1 s later and stays down 2 s. Counted: panics and escalations lost or
duplicated at the police, and how late the latest escalation came against its
deadline (a timer started afresh would be about 3 s late, a lost one never
comes); ``recover_s`` is from the restart to the gateway ready again.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from pathlib import Path

from bench.faults import FaultRow
from bench.faults._staging import p99, running_block, staged_gateway
from lab.process import GatewayProcess

FAULT = "kill -9 mid-escalation"
AFTER_S = 5.0
KILL_AFTER_S = 1.0
DOWN_S = 2.0
ORIGINS = 5


def run(work: Path) -> FaultRow:
    """Stage the escalations, kill and restart the gateway, and measure."""
    escalates = {
        "name": "panic-escalates",
        "when": {"kinds": ["panic"]},
        "do": [{"action": "escalate", "after_s": AFTER_S}],
    }
    with staged_gateway(work, rules={"disable": ["robbery-area-alert"], "rules": [escalates]}) as (
        gateway,
        shops,
    ):
        gateway.start()
        return asyncio.run(_measure(gateway, shops))


async def _measure(gateway: GatewayProcess, shops: list[str]) -> FaultRow:
    before, after = shops[: ORIGINS * 4 : 4], shops[2 : ORIGINS * 4 : 4]
    async with running_block(gateway, shops) as block:
        for shop in before:
            await block.panic(shop)
        await block.until(lambda: len(block.delivered("panic")) >= ORIGINS, "the panics")
        await asyncio.sleep(KILL_AFTER_S)  # staging: the timers are running
        await asyncio.to_thread(gateway.kill)
        await asyncio.sleep(DOWN_S)  # staging: the outage
        restarted = time.perf_counter()
        await asyncio.to_thread(gateway.start)
        recover_s = time.perf_counter() - restarted
        for shop in after:
            await block.panic(shop)
        await block.until(
            lambda: len(block.delivered("escalation")) >= 2 * ORIGINS,
            "every escalation",
            timeout_s=AFTER_S * 4,
        )
        await asyncio.sleep(0.5)  # any duplicate delivery settles
        panics = {b["id"]: b for b in block.delivered("panic")}
        escalations = block.delivered("escalation")
        late_s = [
            (
                datetime.fromisoformat(e["received_at"])
                - datetime.fromisoformat(panics[e["attrs"]["cause_event_id"]]["received_at"])
            ).total_seconds()
            - AFTER_S
            for e in escalations
            if e["attrs"]["cause_event_id"] in panics
        ]
        escalated = {e["attrs"]["cause_event_id"] for e in escalations}
        sent = 2 * len(before) + 2 * len(after)  # a panic and its escalation each
        arrived = len({b["shop_id"] for b in panics.values()}) + len(escalated & set(panics))
        return FaultRow(
            FAULT,
            sent=sent,
            lost=sent - arrived,
            duplicated=block.police.duplicates + len(escalations) - len(escalated),
            p99_during_ms=p99(block.latencies_ms(before)),
            p99_after_ms=p99(block.latencies_ms(after)),
            recover_s=recover_s,
            note=(
                f"escalations vs their deadline: latest {max(late_s, default=0):+.2f} s, "
                f"earliest {min(late_s, default=0):+.2f} s (of {len(late_s)})"
            ),
        )
