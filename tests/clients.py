"""Async helpers for tests: a block of shop panels, the police platform, bounded waits."""

from __future__ import annotations

import asyncio
import csv
import math
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from datetime import time as clock_time
from zoneinfo import ZoneInfo

from pydantic import SecretStr

from firmware_stubs.mqtt_panel import ShopPanel
from firmware_stubs.police_platform import PolicePlatform
from gateway.mqtt.client import BrokerConfig
from tests.harness import SURVEY

ZONE = ZoneInfo("Asia/Shanghai")
"""The survey's shops keep Beijing time."""


def local_moments(start: clock_time, end: clock_time, count: int) -> list[str]:
    """``count`` rising moments of the latest stretch of local wall time in [start, end).

    Every moment lies in the last 23 h and at least 2 min in the past, so the gateway
    believes the device's time (it keeps its own for a device clock over 24 h behind);
    the stretch may wrap midnight (23:30 to 08:00 is the block's closed night).
    """

    def inside(moment: datetime) -> bool:
        wall = moment.time()
        return start <= wall < end if start < end else wall >= start or wall < end

    now = datetime.now(ZONE).replace(second=0, microsecond=0)
    minutes = [now - timedelta(minutes=m) for m in range(2, 23 * 60)]
    run: list[datetime] = []
    for moment in minutes:
        if inside(moment):
            run.append(moment)
        elif len(run) >= 10:
            break
        else:
            run = []
    assert len(run) >= 10, f"no stretch of {start}-{end} in the last 23 h"
    first, last = run[-1], run[0]
    step = (last - first) / (count + 1)
    return [(first + step * (i + 1)).isoformat() for i in range(count)]


def survey_rows() -> list[dict[str, str]]:
    return list(csv.DictReader(SURVEY.open()))


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Written independently of rules.geo, to check it."""
    r = 6371008.8
    a = (
        math.sin(math.radians(lat2 - lat1) / 2) ** 2
        + math.cos(math.radians(lat1))
        * math.cos(math.radians(lat2))
        * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    )
    return 2 * r * math.atan2(math.sqrt(a), math.sqrt(1 - a))


def expected_nearest(shop_id: str, count: int = 10, radius_m: float = 300) -> list[str]:
    rows = {r["shop_id"]: r for r in survey_rows()}
    me = rows[shop_id]
    dist = sorted(
        (haversine_m(float(me["lat"]), float(me["lon"]), float(r["lat"]), float(r["lon"])), sid)
        for sid, r in rows.items()
        if sid != shop_id
    )
    return [sid for d, sid in dist if d <= radius_m][:count]


async def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll a condition on the event loop; fail with ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.01)


@asynccontextmanager
async def running(
    *,
    block_url: str | None = None,
    police_url: str | None = None,
    shops: list[str] | None = None,
    platform_id: str = "police-platform",
    passwords: dict[str, str] | None = None,
) -> AsyncIterator[tuple[dict[str, ShopPanel], PolicePlatform | None]]:
    """Panels for ``shops`` on the block broker and a police platform, connected and listening.

    With ``passwords`` (shop id to password), each panel logs in as its shop, as
    `lianfang broker-config` sets the block broker up.
    """

    def login(shop: str) -> BrokerConfig:
        if passwords is None:
            return BrokerConfig(url=block_url)
        return BrokerConfig(url=block_url, username=shop, password=SecretStr(passwords[shop]))

    panels = {s: ShopPanel(login(s), s) for s in shops or []} if block_url else {}
    platform = (
        PolicePlatform(BrokerConfig(url=police_url), client_id=platform_id) if police_url else None
    )
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(p.run(), name=f"panel[{s}]") for s, p in panels.items()]
        if platform:
            tasks.append(tg.create_task(platform.run(), name="platform"))
            await asyncio.wait_for(platform.ready.wait(), 10)
        for p in panels.values():
            await asyncio.wait_for(p.ready.wait(), 10)
        try:
            yield panels, platform
        finally:
            for t in tasks:
                t.cancel()


def open_police_session(url: str) -> None:
    """Subscribe the police platform once, so its broker queues events for it while it is away."""

    async def once() -> None:
        async with running(police_url=url):
            pass

    asyncio.run(once())
