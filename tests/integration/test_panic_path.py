"""The panic path end to end, with real brokers and the gateway as a real process."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import aiomqtt

from tests.clients import expected_nearest, running, survey_rows, wait_until


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
                assert notice.body["distance_m"] > 0
                assert notice.body["bearing"]
                assert notice.body["expires_at"] > body["received_at"]

    asyncio.run(scenario())


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
    shown = cli("status")
    assert shown["pending"].get("police", 0) == 0
    assert shown["status"]["events"] >= 1
