"""The gateway's clock 2 h behind (libfaketime): notices expired on arrival until the police speak.

Ten panics before the police's first command, then a signed command issued by
the police's clock, then ten panics more. Counted: panics lost or duplicated
at the police, notices that a shop's device finds already expired, the
command obeyed or refused; ``recover_s`` is from the command to ``clock_suspect``
at the police (the gateway now using the police's time).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bench.faults import FaultRow
from bench.faults._staging import Block, environment, p99, running_block, staged_gateway
from firmware_stubs.police_commands import command_body, new_key, send, sign
from lab.process import GatewayProcess

FAULT = "clock 2 h behind"
PANICS_EACH = 10
LIBFAKETIME = sorted(Path("/usr/lib").glob("*/faketime/libfaketimeMT.so.1")) + sorted(
    Path("/usr/lib/faketime").glob("libfaketimeMT.so.1")
)


def expired_share(block: Block, shops: list[str]) -> tuple[int, int]:
    """Of the notices of ``shops``' alerts, how many had expired when they arrived."""
    now = datetime.now(UTC)
    notices = [
        n.body
        for panel in block.panels.values()
        for n in panel.notices
        if n.body.get("from_shop_id") in shops
    ]
    expired = sum(datetime.fromisoformat(n["expires_at"]) < now for n in notices)
    return expired, len(notices)


def run(work: Path) -> FaultRow:
    """Stage the gateway 2 h behind and measure before and after the police's command."""
    if not LIBFAKETIME:
        return FaultRow(FAULT, 0, 0, 0, None, None, None, "skipped: libfaketime not installed")
    key, public = new_key()
    with staged_gateway(
        work,
        commands={"keys": {"platform-1": public}},
        rules={"disable": ["robbery-area-alert"]},
    ) as (gateway, shops):
        with environment(LD_PRELOAD=str(LIBFAKETIME[0]), FAKETIME="-2h"):
            gateway.start()
        return asyncio.run(_measure(gateway, shops, key))


async def _measure(gateway: GatewayProcess, shops: list[str], key: Ed25519PrivateKey) -> FaultRow:
    # Shops apart from each other, so that each panic is an alert of its own.
    before, after = shops[: PANICS_EACH * 4 : 4], shops[2 : PANICS_EACH * 4 : 4]
    async with running_block(gateway, shops) as block:
        for shop in before:
            await block.panic(shop)
        await block.until(lambda: len(block.delivered("panic")) >= len(before), "panics")
        body = command_body("GW-001", "set_level", level="everyday")
        command = sign(key, "platform-1", body)
        await send(block.police.broker, "police/v1/L1/GW-001/cmd", command)
        recover_s = await block.until(lambda: block.delivered("clock_suspect"), "clock_suspect")
        for shop in after:
            await block.panic(shop)
        await block.until(
            lambda: len(block.delivered("panic")) >= len(before) + len(after), "panics after"
        )
        await asyncio.sleep(0.5)  # the last notices and any duplicate delivery settle
        sent = len(before) + len(after)
        arrived = {b["shop_id"] for b in block.delivered("panic")}
        expired_before, notices_before = expired_share(block, before)
        expired_after, notices_after = expired_share(block, after)
        refused = len(block.delivered("command_refused"))
        return FaultRow(
            FAULT,
            sent=sent,
            lost=sent - len(arrived & {*before, *after}),
            duplicated=block.police.duplicates,
            p99_during_ms=p99(block.latencies_ms(before)),
            p99_after_ms=p99(block.latencies_ms(after)),
            recover_s=recover_s,
            note=(
                f"notices expired on arrival: {expired_before}/{notices_before} before the "
                f"police's time, {expired_after}/{notices_after} after; commands refused: {refused}"
            ),
        )
