"""The journal's size cap in a running gateway: heartbeats go, alarms stay, the status says so."""

from __future__ import annotations

import asyncio
import sqlite3

from tests.clients import running, wait_until


def test_over_the_cap_heartbeats_are_evicted_alarms_kept_and_status_warns(
    block_broker, police_broker, start_gateway
):
    """With a 0.3 MB cap, 2,000 heartbeats overflow it; the panic stays and is delivered; status warns."""
    gw = start_gateway(journal={"max_size_mb": 0.3}, status_interval_s=0.2)

    async def scenario() -> None:
        async with running(
            block_url=block_broker.url, police_url=police_broker.url, shops=["S00002"]
        ) as (panels, platform):
            assert platform is not None
            await panels["S00002"].send("panic")
            for _ in range(2000):
                await panels["S00002"].send("heartbeat", battery=3.02)
            await wait_until(lambda: gw.status()["evicted"] > 0, 15, "eviction past the cap")
            await wait_until(lambda: gw.status()["warnings"], 5, "a status warning")
            assert "cap" in gw.status()["warnings"][0]
            assert [d.body["kind"] for d in platform.unique] == ["panic"]

    asyncio.run(scenario())
    assert gw.stop() == 0
    db = sqlite3.connect(gw.config.parent / "state" / "journal.sqlite3")
    kinds = dict(db.execute("SELECT kind, COUNT(*) FROM events GROUP BY kind").fetchall())
    assert kinds["panic"] == 1
    assert kinds.get("heartbeat", 0) < 2000
