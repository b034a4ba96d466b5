"""The journal's size cap in a running gateway: heartbeats go, alarms stay, the status says so."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from pathlib import Path

from tests.clients import running, wait_until

CAP_MB = 0.3
HEARTBEATS = 2000  # about 1.6 MB journalled
WAVE = 500
# Ten shops share the load: one shop's routine events are capped at 300 per 10 s.
SENDERS = [f"S{n:05d}" for n in range(2, 12)]


def on_disk(path: Path) -> int:
    """The journal's bytes: the database's pages in use and its WAL (read while it runs)."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        pages, free, size = (
            db.execute(f"PRAGMA {p}").fetchone()[0]
            for p in ("page_count", "freelist_count", "page_size")
        )
    wal = path.with_name(path.name + "-wal")
    return (pages - free) * size + (wal.stat().st_size if wal.exists() else 0)


def test_over_the_cap_heartbeats_are_evicted_alarms_kept_and_the_journal_ends_under_it(
    block_broker, police_broker, start_gateway
):
    """With a 0.3 MB cap, 2,000 heartbeats overflow it; it ends under, WAL and all."""
    gw = start_gateway(journal={"max_size_mb": CAP_MB}, status_interval_s=0.2)
    journal = gw.config.parent / "state" / "journal.sqlite3"

    async def scenario() -> None:
        async with running(
            block_url=block_broker.url, police_url=police_broker.url, shops=SENDERS
        ) as (panels, platform):
            assert platform is not None
            await panels["S00002"].send("panic")
            # In waves: a stock Mosquitto queues 1,000 messages for a client at most.
            for wave in range(1, HEARTBEATS // WAVE + 1):
                for i in range(WAVE):
                    panel = panels[SENDERS[i % len(SENDERS)]]
                    await panel.send("heartbeat", battery=3.02, note="x" * 200)
                await wait_until(
                    lambda wave=wave: gw.status()["events"] == 1 + wave * WAVE,
                    30,
                    f"heartbeat wave {wave} journalled",
                )
            # One round of eviction takes back far less than the overflow: only rounds
            # until the journal fits bring it under the cap.
            await wait_until(
                lambda: gw.status()["journal_mb"] <= CAP_MB, 15, "the journal under its cap"
            )
            assert on_disk(journal) <= CAP_MB * 1_000_000
            assert "cap" in gw.status()["warnings"][0]
            assert [d.body["kind"] for d in platform.unique] == ["panic"]

    asyncio.run(scenario())
    assert gw.stop() == 0
    assert on_disk(journal) <= CAP_MB * 1_000_000
    db = sqlite3.connect(journal)
    kinds = dict(db.execute("SELECT kind, COUNT(*) FROM events GROUP BY kind").fetchall())
    assert kinds["panic"] == 1
    assert 0 < kinds["heartbeat"] < HEARTBEATS


def test_alarms_alone_over_the_cap_are_kept_and_lianfang_status_warns(
    block_broker, police_broker, start_gateway
):
    """A cap smaller than the empty journal: nothing but alarms left, `lianfang status` says so."""
    gw = start_gateway(journal={"max_size_mb": 0.01}, status_interval_s=0.2)

    async def scenario() -> None:
        async with running(
            block_url=block_broker.url, police_url=police_broker.url, shops=["S00002"]
        ) as (panels, platform):
            assert platform is not None
            for _ in range(20):
                await panels["S00002"].send("heartbeat", battery=3.02)
            await panels["S00002"].send("panic")
            await wait_until(lambda: platform.unique, 10, "the panic at the police")
            await wait_until(lambda: gw.status()["events"] >= 21, 10, "every event journalled")
            await wait_until(
                lambda: "only alarms" in " ".join(gw.status()["warnings"]), 15, "the warning"
            )

    asyncio.run(scenario())
    shown = subprocess.run(
        [sys.executable, "-m", "gateway", "status", "--config", str(gw.config)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert "with only alarms and undelivered records left" in " ".join(shown.stdout.split())
    assert gw.stop() == 0
    db = sqlite3.connect(gw.config.parent / "state" / "journal.sqlite3")
    kinds = dict(db.execute("SELECT kind, COUNT(*) FROM events GROUP BY kind").fetchall())
    assert kinds == {"panic": 1}
