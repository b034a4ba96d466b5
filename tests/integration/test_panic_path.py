"""The panic path end to end, with real brokers and the gateway as a real process."""

from __future__ import annotations

import asyncio
import json
import math
import os
import sqlite3
import subprocess
import sys
import time

import aiomqtt
import pytest

from tests.clients import expected_nearest, haversine_m, running, survey_rows, wait_until

WAYS = ("north", "north-east", "east", "south-east", "south", "south-west", "west", "north-west")


def way_to_go_deg(frm: dict[str, str], to: dict[str, str]) -> float:
    """Initial bearing from shop ``frm`` to shop ``to``, degrees from north, by vectors.

    Written apart from rules.geo (which uses the spherical trigonometry formula):
    the direction to ``to`` projected on the plane tangent at ``frm``, read
    against that plane's north and east.
    """
    lat1, lon1, lat2, lon2 = (math.radians(float(p[k])) for p in (frm, to) for k in ("lat", "lon"))

    def unit(lat: float, lon: float) -> tuple[float, float, float]:
        return (math.cos(lat) * math.cos(lon), math.cos(lat) * math.sin(lon), math.sin(lat))

    a, b = unit(lat1, lon1), unit(lat2, lon2)
    towards = [bi - ai for ai, bi in zip(a, b, strict=True)]
    east = (-math.sin(lon1), math.cos(lon1), 0.0)
    north = (-math.sin(lat1) * math.cos(lon1), -math.sin(lat1) * math.sin(lon1), math.cos(lat1))
    along_east = sum(t * e for t, e in zip(towards, east, strict=True))
    along_north = sum(t * n for t, n in zip(towards, north, strict=True))
    return math.degrees(math.atan2(along_east, along_north)) % 360


def way_in_words(deg: float) -> set[str]:
    """The 8-point direction of ``deg``; both names within 0.2 degrees of a sector edge."""
    return {WAYS[round(((deg + d) % 360) / 45) % 8] for d in (-0.2, 0.0, 0.2)}


def test_panic_alerts_the_ten_nearest_shops_and_reaches_the_police(
    block_broker, police_broker, start_gateway
):
    """A panic at S00011 notifies exactly its 10 nearest shops and reaches the police with shop data."""
    start_gateway()
    rows = {r["shop_id"]: r for r in survey_rows()}
    expected = expected_nearest("S00011")
    assert len(expected) == 10

    async def scenario() -> None:
        async with running(
            block_url=block_broker.url, police_url=police_broker.url, shops=list(rows)
        ) as (panels, platform):
            assert platform is not None
            await panels["S00011"].send("panic", zone="1")
            await wait_until(
                lambda: sum(bool(p.notices) for p in panels.values()) >= 10 and platform.by_id,
                10,
                "10 notices and the police event",
            )
            await asyncio.sleep(0.3)  # room for any wrong extra notice to arrive
            alerted = {s for s, p in panels.items() if p.notices}
            assert alerted == set(expected)
            [police] = platform.unique
            body = police.body
            assert body["shop_id"] == "S00011"
            assert body["kind"] == "panic"
            assert body["zone"] == "1"
            assert body["gateway_id"] == "GW-001"
            assert body["shop"]["name"] == rows["S00011"]["name"]
            assert body["shop"]["lat"] == float(rows["S00011"]["lat"])
            assert body["shop"]["grid"] == {
                "large": "L1",
                "medium": "L1-M01",
                "small": rows["S00011"]["small_grid"],
            }
            assert police.topic == "police/v1/L1/GW-001/events"
            for shop in expected:
                [notice] = panels[shop].notices
                assert notice.body["event_id"] == body["id"]
                assert notice.body["from_shop_id"] == "S00011"
                assert notice.body["from_shop_name"] == rows["S00011"]["name"]
                assert notice.body["kind"] == "panic"
                here, there = rows[shop], rows["S00011"]
                metres = haversine_m(
                    float(there["lat"]), float(there["lon"]), float(here["lat"]), float(here["lon"])
                )
                assert notice.body["distance_m"] == pytest.approx(metres, abs=0.06)
                # The way from the alerted shop to the one in trouble (rounded to 0.1 degree).
                way = way_to_go_deg(here, there)
                turn = (notice.body["bearing_deg"] - way + 180) % 360 - 180
                assert abs(turn) <= 0.06, (shop, notice.body["bearing_deg"], way)
                assert notice.body["bearing"] in way_in_words(way)
                assert notice.body["expires_at"] > body["received_at"]

    asyncio.run(scenario())


def test_the_neighbour_alert_goes_out_while_the_journal_is_locked(
    block_broker, police_broker, start_gateway
):
    """Another connection holds the journal's write lock: the notices still go out at once.

    The panic's journal write waits for the lock (within SQLite's busy timeout);
    once the lock is let go the panic is journalled and reaches the police.
    """
    gw = start_gateway()
    journal = gw.config.parent / "state" / "journal.sqlite3"
    near = expected_nearest("S00011")
    took: list[float] = []

    async def scenario() -> None:
        async with running(
            block_url=block_broker.url, police_url=police_broker.url, shops=["S00011", *near]
        ) as (panels, platform):
            assert platform is not None
            lock = sqlite3.connect(journal, isolation_level=None, timeout=5)
            lock.execute("BEGIN EXCLUSIVE")
            try:
                pressed = time.perf_counter()
                await panels["S00011"].send("panic")
                await wait_until(
                    lambda: all(panels[s].notices for s in near), 5, "10 notices, journal locked"
                )
                took.append(max(panels[s].notices[0].at for s in near) - pressed)
                [[panics]] = lock.execute("SELECT count(*) FROM events WHERE kind = 'panic'")
                assert panics == 0  # the journal write is still waiting for the lock
                assert platform.by_id == {}
            finally:
                lock.execute("ROLLBACK")
                lock.close()
            await wait_until(lambda: platform.by_id, 10, "the panic forwarded after the lock")
            [police] = platform.unique
            assert (police.body["shop_id"], police.body["kind"]) == ("S00011", "panic")

    asyncio.run(scenario())
    # The usual latency is milliseconds; a generous bound, far below the 5 s busy timeout.
    assert took[0] < 1.0
    [[panics]] = sqlite3.connect(journal).execute("SELECT count(*) FROM events WHERE kind='panic'")
    assert panics == 1


def test_repeated_presses_alert_once_but_all_reach_the_police(
    block_broker, police_broker, start_gateway
):
    """Within the cool-down, a second panic is journalled and forwarded but does not re-alert."""
    start_gateway()
    near = expected_nearest("S00040")

    async def scenario() -> None:
        async with running(
            block_url=block_broker.url, police_url=police_broker.url, shops=["S00040", *near]
        ) as (panels, platform):
            assert platform is not None
            for _ in range(3):
                await panels["S00040"].send("panic")
            await wait_until(lambda: len(platform.by_id) == 3, 10, "three police events")
            await asyncio.sleep(0.3)
            assert [len(panels[s].notices) for s in near] == [1] * 10

    asyncio.run(scenario())


def test_bad_input_is_counted_and_dropped_and_the_gateway_keeps_serving(
    block_broker, police_broker, start_gateway
):
    """Malformed, unknown, oversize, non-UTF-8 and mistyped messages are counted; a panic still gets through."""
    gw = start_gateway(status_interval_s=0.2)
    bad = [
        ("S00001", b"{not json"),
        ("S00001", b"\xff\xfe\xfd"),
        ("S00001", b"[1, 2, 3]"),
        ("S00001", json.dumps({"device_id": 5, "kind": "panic"}).encode()),
        ("S00001", json.dumps({"device_id": "panel-1", "kind": "explode"}).encode()),
        ("S00001", json.dumps({"device_id": "panel-1", "kind": "panic", "seq": "x"}).encode()),
        ("S00001", json.dumps({"device_id": "panel-9", "kind": "panic"}).encode()),
        ("S99999", json.dumps({"device_id": "panel-1", "kind": "panic"}).encode()),
        ("S00001", b"{" + b" " * (1024 * 1024) + b"}"),
    ]

    async def scenario() -> None:
        async with running(
            block_url=block_broker.url, police_url=police_broker.url, shops=["S00005"]
        ) as (panels, platform):
            assert platform is not None
            async with aiomqtt.Client("127.0.0.1", block_broker.port, identifier="attacker") as c:
                for shop, payload in bad:
                    await c.publish(f"lianfang/v1/shop/{shop}/event", payload, qos=1)
            await panels["S00005"].send("panic")
            await wait_until(lambda: platform.by_id, 10, "the good panic at the police")
            [good] = platform.unique
            assert good.body["shop_id"] == "S00005"

            def counted() -> dict[str, int]:
                return gw.status()["rejected"]

            # S99999 is no shop of this gateway: it subscribes to its own shops' topics
            # only, so that message never reaches it.
            delivered = len(bad) - 1
            await wait_until(
                lambda: sum(counted().values()) == delivered, 10, "every bad message counted"
            )
            assert counted() == {
                "shops.malformed": 2,
                "shops.invalid": 4,
                "shops.unknown_device": 1,
                "shops.oversize": 1,
            }

    asyncio.run(scenario())
    assert gw.process is not None
    assert gw.process.poll() is None
    assert gw.stop() == 0


def test_status_and_events_show_what_the_gateway_did(block_broker, police_broker, start_gateway):
    """`lianfang events` lists the journalled panic; `lianfang status` shows it counted and delivered."""
    gw = start_gateway(status_interval_s=0.2)

    async def scenario() -> None:
        async with running(
            block_url=block_broker.url, police_url=police_broker.url, shops=["S00030"]
        ) as (panels, platform):
            assert platform is not None
            await panels["S00030"].send("panic")
            await wait_until(lambda: platform.by_id, 10, "the panic at the police")
            await wait_until(lambda: gw.status()["events"] >= 1, 10, "the status file")

    asyncio.run(scenario())
    assert gw.stop() == 0

    def cli(*args: str) -> object:
        out = subprocess.run(
            [sys.executable, "-m", "gateway", *args, "--config", str(gw.config), "--json"],
            check=True,
            capture_output=True,
            text=True,
        )
        return json.loads(out.stdout)

    listed = cli("events", "--limit", "5")
    assert [(e["shop_id"], e["kind"]) for e in listed if e["shop_id"]] == [("S00030", "panic")]
    [panic] = [e for e in listed if e["shop_id"]]
    # Who the alert told, and when the police acknowledged it.
    assert panic["attrs"]["alerted"] == sorted(expected_nearest("S00030"))
    [police] = panic["deliveries"]
    assert police["forwarder"] == "police"
    assert police["acked_at"] is not None
    assert police["last_error"] is None
    table = subprocess.run(
        [sys.executable, "-m", "gateway", "events", "--config", str(gw.config)],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "400"},
    ).stdout
    [row] = [line for line in table.splitlines() if "S00030" in line and "panic" in line]
    assert " ".join(sorted(expected_nearest("S00030"))) in row
    assert "police " + police["acked_at"][11:19] in row
    shown = cli("status")
    assert shown["pending"].get("police", 0) == 0
    assert shown["status"]["events"] >= 1
