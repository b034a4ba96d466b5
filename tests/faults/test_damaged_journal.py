"""A journal damaged by a power cut: the gateway starts anyway, with what could be salvaged.

A real gateway writes the journal (some events delivered to the police, some
still waiting because the police broker is down), stops, and the file is
damaged in one of three shapes; the real daemon is then started on it again.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from firmware_stubs.mqtt_panel import ShopPanel
from firmware_stubs.police_platform import PolicePlatform
from lab.broker import Mosquitto
from tests.clients import expected_nearest, running, wait_until
from tests.harness import TestGateway

SHOPS = ["S00002", "S00008"]
HEARTBEATS = 300
TROUBLES = 40  # per batch: one delivered before the damage, one still waiting
PAGE = 4096
DEVICE_EVENTS_ONLY = {"rules": {"disable": ["intrusion-when-armed", "robbery-area-alert"]}}


def truncate(data: bytes) -> bytes:
    """A write cut short: the last third of the file is gone."""
    return data[: len(data) * 2 // 3 // PAGE * PAGE]


def garble_header(data: bytes) -> bytes:
    """Noise over the first page: SQLite no longer knows the file."""
    return os.urandom(PAGE) + data[PAGE:]


def garble_middle(data: bytes) -> bytes:
    """Noise over two pages in the middle of the file."""
    middle = len(data) // 2 // PAGE * PAGE
    return data[:middle] + os.urandom(2 * PAGE) + data[middle + 2 * PAGE :]


def lianfang(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the installer CLI on ``config``."""
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


Trouble = tuple[str, str, int]
"""A trouble's batch, shop and panel sequence number (a new panel may reuse a number)."""


async def send_troubles(panels: dict[str, ShopPanel], batch: str) -> list[Trouble]:
    """``TROUBLES`` low-battery troubles of ``batch``, alternating between the shops."""
    return [
        (batch, SHOPS[i % 2], await panels[SHOPS[i % 2]].send("low_battery", batch=batch))
        for i in range(TROUBLES)
    ]


def write_journal(
    gw: TestGateway, block_broker: Mosquitto, police_broker: Mosquitto
) -> tuple[list[Trouble], list[Trouble]]:
    """Heartbeats and troubles delivered, then troubles left waiting (police broker down)."""

    async def scenario() -> tuple[list[Trouble], list[Trouble]]:
        async with running(
            block_url=block_broker.url, police_url=police_broker.url, shops=SHOPS
        ) as (panels, platform):
            assert platform is not None
            for i in range(HEARTBEATS):
                await panels[SHOPS[i % 2]].send("heartbeat", battery=3.02)
            delivered = await send_troubles(panels, "delivered")
            await wait_until(lambda: len(platform.unique) >= TROUBLES, 15, "troubles delivered")
        police_broker.stop()
        async with running(block_url=block_broker.url, shops=SHOPS) as (panels, _):
            waiting = await send_troubles(panels, "waiting")
            await wait_until(
                lambda: gw.status()["events"] >= HEARTBEATS + 2 * TROUBLES, 15, "all journalled"
            )
        return delivered, waiting

    return asyncio.run(scenario())


# Two gateway starts and three CLI runs, one after another: each takes 1 to 2 s of
# CPU, over 10 s on a CI runner with more workers than cores.
@pytest.mark.timeout(300)
@pytest.mark.parametrize("damage", [truncate, garble_header, garble_middle])
def test_a_damaged_journal_is_moved_aside_salvaged_and_the_gateway_serves(
    damage, block_broker, police_broker, start_gateway
):
    """Every shape: the daemon runs, journal_damaged reaches the police, waiting events follow."""
    gw = start_gateway(status_interval_s=0.2, **DEVICE_EVENTS_ONLY)
    journal = gw.config.parent / "state" / "journal.sqlite3"
    delivered, waiting = write_journal(gw, block_broker, police_broker)
    assert gw.stop() == 0
    with sqlite3.connect(journal) as db:
        [(journalled,)] = db.execute("SELECT COUNT(*) FROM events").fetchall()
    journal.write_bytes(damage(journal.read_bytes()))

    checked = lianfang(gw.config, "check")
    assert checked.returncode == 0, checked.stderr
    assert f"journal {journal} is damaged" in checked.stderr
    for command in ("status", "events"):
        shown = lianfang(gw.config, command)
        assert "Traceback" not in shown.stdout + shown.stderr
        assert shown.returncode == 0 or "is damaged" in shown.stderr

    police_broker.start()
    restarted_at = datetime.now(UTC).isoformat()
    gw.start()
    [moved] = journal.parent.glob("journal.damaged-*Z.sqlite3")
    assert len(moved.name) == len("journal.damaged-20261202T173000Z.sqlite3")

    async def serve_after_damage() -> None:
        async with running(
            block_url=block_broker.url,
            police_url=police_broker.url,
            shops=sorted({"S00011", *SHOPS, *expected_nearest("S00011")}),
        ) as (panels, platform):
            assert platform is not None
            await wait_until(
                lambda: any(d.body["kind"] == "journal_damaged" for d in platform.unique),
                15,
                "journal_damaged at the police",
            )
            [report] = [d.body for d in platform.unique if d.body["kind"] == "journal_damaged"]
            counts = report["attrs"]
            assert counts["moved_to"] == moved.name
            assert "damaged" in " ".join(gw.status()["warnings"])
            assert 0 < counts["salvaged"] <= journalled
            if damage is garble_header:
                assert counts["lost"] is None  # nothing tells how many there were
            elif counts["lost"] is not None or damage is garble_middle:
                assert counts["salvaged"] + counts["lost"] == journalled
            # The salvaged troubles that were waiting are delivered now.
            salvaged = _salvaged_troubles(journal)
            still_waiting = {key for key in waiting if key in salvaged}
            await wait_until(
                lambda: still_waiting <= _troubles_at(platform), 15, "the salvaged waiting troubles"
            )
            # A fresh panic still alerts its neighbours and reaches the police.
            await panels["S00011"].send("panic")
            await wait_until(
                lambda: any(d.body["kind"] == "panic" for d in platform.unique), 10, "the panic"
            )
            for shop in expected_nearest("S00011"):
                await wait_until(lambda shop=shop: panels[shop].notices, 10, f"notice at {shop}")
            if damage is not garble_header:
                # Delivery states read back: what was delivered is not sent again.
                kept_delivered = _salvaged_troubles(journal, delivered_before=restarted_at)
                assert kept_delivered & set(delivered) or damage is truncate  # the tail is gone
                assert not (_troubles_at(platform) & kept_delivered)

    asyncio.run(serve_after_damage())
    assert gw.stop() == 0


def _salvaged_troubles(journal: Path, *, delivered_before: str | None = None) -> set[Trouble]:
    """The troubles in the fresh journal; with ``delivered_before``, those delivered before then.

    The salvage keeps each delivery's time of acknowledgement as it was.
    """
    where = "" if delivered_before is None else " AND d.acked_at < ?"
    db = sqlite3.connect(f"file:{journal}?mode=ro", uri=True)
    try:
        return {
            (batch, shop, int(seq))
            for batch, shop, seq in db.execute(
                "SELECT json_extract(e.body, '$.attrs.batch'), e.shop_id,"
                " json_extract(e.body, '$.attrs.seq') FROM events e"
                " JOIN deliveries d ON d.seq = e.seq WHERE e.kind = 'low_battery'" + where,
                () if delivered_before is None else (delivered_before,),
            )
        }
    finally:
        db.close()


def _troubles_at(platform: PolicePlatform) -> set[Trouble]:
    return {
        (d.body["attrs"]["batch"], d.body["shop_id"], d.body["attrs"]["seq"])
        for d in platform.unique
        if d.body["kind"] == "low_battery"
    }
