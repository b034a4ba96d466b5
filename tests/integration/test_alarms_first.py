"""Alarms first after an outage: the real daemon, a real police broker stopped and started."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from pathlib import Path

from gateway.journal_reader import JournalReader
from tests.clients import open_police_session, running, wait_until

SHOPS = [f"S{n:05d}" for n in range(1, 21)]
BACKLOG_KINDS = ["door_open", "door_close", "restore"]  # all status
WINDOW = 50
RANK = {"panic": 0, "device_fault": 1}  # everything else here is status (2)


def test_a_panic_after_2000_queued_status_events_is_among_the_first_delivered(
    block_broker, police_broker, start_gateway
):
    """Police broker down: 2,000 status events, then a panic and its cancel; broker back.

    The panic arrives within the first window, the cancel after it, nothing is
    lost or duplicated, and journal order holds within each priority.
    """
    open_police_session(police_broker.url)
    gw = start_gateway(
        rules={"disable": ["intrusion-when-armed", "robbery-area-alert"]},
        forwarders=[
            {
                "kind": "police_mqtt",
                "name": "police",
                "broker": {"url": police_broker.url},
                "window": WINDOW,
            }
        ],
    )
    journal = Path(gw.config.parent / "state" / "journal.sqlite3")

    def pending() -> int:
        reader = JournalReader(journal)
        try:
            return reader.pending_counts().get("police", 0)
        finally:
            reader.close()

    async def queue_backlog() -> list[tuple[str, int, str]]:
        sent: list[tuple[str, int, str]] = []
        async with running(block_url=block_broker.url, shops=SHOPS) as (panels, _):
            for i in range(2000):
                shop, kind = SHOPS[i % len(SHOPS)], BACKLOG_KINDS[i % len(BACKLOG_KINDS)]
                sent.append((shop, await panels[shop].send(kind), kind))
            sent.append(("S00007", await panels["S00007"].send("panic"), "panic"))
            sent.append(("S00007", await panels["S00007"].send("cancel"), "cancel"))
            # 2,002 events plus the journalled link fault, all waiting for the police.
            await wait_until(lambda: pending() >= 2003, 60, "the backlog journalled")
        return sent

    police_broker.stop()
    sent = asyncio.run(queue_backlog())

    async def drain() -> None:
        police_broker.start()
        async with running(police_url=police_broker.url) as (_, platform):
            assert platform is not None
            await wait_until(
                lambda: len(platform.by_id) >= 2002 + 2, 90, "the backlog and link events"
            )
            events = [d.body for d in platform.unique if d.body["shop_id"] is not None]
            assert sorted((e["shop_id"], e["attrs"]["seq"], e["kind"]) for e in events) == sorted(
                sent
            )
            assert platform.duplicates == 0
            kinds = [e["kind"] for e in events]
            at = kinds.index("panic")
            # Only its own shop's earlier rows may go with it (a restore must not land
            # after the panic and seem to close it: decision 87); others' stay behind.
            others = [e for e in events[:at] if e["shop_id"] != "S00007"]
            assert len(others) < WINDOW, f"{len(others)} other shops' events before the panic"
            own_bound = [
                seq for shop, seq, kind in sent[:2000] if shop == "S00007" and kind == "restore"
            ]
            assert {e["attrs"]["seq"] for e in events[:at] if e["kind"] == "restore"} >= set(
                own_bound
            )
            assert kinds.index("cancel") > at
            # Within one priority, journal order: per shop, device seq ascending.
            per_rank_shop: dict[tuple[int, str], list[int]] = defaultdict(list)
            for e in events:
                per_rank_shop[(RANK.get(e["kind"], 2), e["shop_id"])].append(e["attrs"]["seq"])
            assert all(seqs == sorted(seqs) for seqs in per_rank_shop.values())

    asyncio.run(drain())
