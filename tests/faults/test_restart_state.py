"""A restart keeps what the rules were doing: escalations, open alerts, area-alert windows.

The real daemon is killed with SIGKILL, as a power cut or the OOM killer would,
and started again on the same journal; the brokers and the shops stay up.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from pathlib import Path

import yaml

from firmware_stubs.mqtt_panel import ShopPanel
from gateway.mqtt.client import BrokerConfig
from lab.broker import Mosquitto
from tests.clients import expected_nearest, running, wait_until
from tests.field import stub
from tests.integration.test_mesh import make_mesh_keys, split_gateway, split_survey

AFTER_S = 6.0
DOWN_S = 2.0
"""How long the gateway stays dead: a timer started afresh would escalate this much later."""
ESCALATES = {
    "rules": {
        "disable": ["robbery-area-alert"],
        "rules": [
            {
                "name": "panic-escalates",
                "when": {"kinds": ["panic"]},
                "do": [{"action": "escalate", "after_s": AFTER_S}],
            }
        ],
    }
}


def bodies(platform, kind: str) -> list[dict]:
    return [d.body for d in platform.unique if d.body["kind"] == kind]


def at(body: dict) -> datetime:
    return datetime.fromisoformat(body["received_at"])


def test_a_kill_9_mid_escalation_still_escalates_once_at_the_original_deadline(
    block_broker, police_broker, start_gateway
):
    """Panic, kill -9, down 2 s, restart: the escalation comes AFTER_S after the panic, once."""
    gw = start_gateway(**ESCALATES)

    async def scenario() -> None:
        async with running(
            block_url=block_broker.url, police_url=police_broker.url, shops=["S00011", "S00040"]
        ) as (panels, platform):
            assert platform is not None
            await panels["S00011"].send("panic")
            await wait_until(lambda: bodies(platform, "panic"), 10, "the panic at the police")
            await asyncio.to_thread(gw.kill)
            await asyncio.sleep(DOWN_S)  # the outage itself, not a wait for anything
            await asyncio.to_thread(gw.start)
            await wait_until(lambda: bodies(platform, "escalation"), 20, "the escalation")
            [panic], [escalation] = bodies(platform, "panic"), bodies(platform, "escalation")
            assert escalation["attrs"]["cause_event_id"] == panic["id"]
            assert escalation["attrs"]["alert_id"] == panic["attrs"]["alert_id"]
            late_s = (at(escalation) - at(panic)).total_seconds()
            assert AFTER_S - 0.1 <= late_s < AFTER_S + DOWN_S, late_s

            # Restarted again after it went out: it does not go out a second time.
            await asyncio.to_thread(gw.kill)
            await asyncio.to_thread(gw.start)
            await panels["S00040"].send("low_battery")
            await wait_until(
                lambda: bodies(platform, "low_battery"), 10, "an event after the second restart"
            )
            assert len(bodies(platform, "escalation")) == 1

    asyncio.run(scenario())


def test_open_alerts_and_area_windows_survive_a_kill_9(block_broker, police_broker, start_gateway):
    """An alert's answers, cancel window and its cell's area count carry over a kill -9.

    Before: S00011 panics, one neighbour answers "coming". After: a second neighbour's
    "coming" counts 2, S00011's cancel names the alert within its window, a panic at
    S00050 (same cell) alerts the cell once, and a third panic in the cell does not again.
    """
    gw = start_gateway()
    first, second = expected_nearest("S00011")[:2]
    shops = ["S00011", first, second, "S00050", "S00060"]

    async def scenario() -> None:
        async with running(
            block_url=block_broker.url, police_url=police_broker.url, shops=shops
        ) as (panels, platform):
            assert platform is not None
            await panels["S00011"].send("panic")
            await wait_until(lambda: panels[first].notices, 10, "the neighbour alert")
            alert_id = panels[first].notices[0].body["alert_id"]
            await panels[first].respond(alert_id, "coming")
            await wait_until(lambda: bodies(platform, "response"), 10, "the first answer")

            await asyncio.to_thread(gw.kill)
            await asyncio.to_thread(gw.start)

            await panels[second].respond(alert_id, "coming")
            await panels["S00011"].send("cancel")
            await wait_until(
                lambda: len(bodies(platform, "response")) == 2 and bodies(platform, "cancel"),
                10,
                "the second answer and the cancel",
            )
            answer = next(b for b in bodies(platform, "response") if b["shop_id"] == second)
            assert answer["attrs"]["alerted"] is True
            assert answer["attrs"]["coming"] == 2
            assert answer["attrs"]["origin_shop_id"] == "S00011"
            [cancel] = bodies(platform, "cancel")
            assert cancel["attrs"]["alert_id"] == alert_id
            assert cancel["attrs"]["within_cancel_window"] is True

            await panels["S00050"].send("panic")
            await wait_until(lambda: bodies(platform, "area_alert"), 10, "the area alert")
            await wait_until(
                lambda: any(n.body.get("kind") == "area_alert" for n in panels["S00060"].notices),
                10,
                "the area notice at a shop of the cell",
            )
            [area] = bodies(platform, "area_alert")
            assert area["attrs"]["cell"] == "L1-M01"
            assert {a["shop_id"] for a in area["attrs"]["alarms"]} == {"S00011", "S00050"}

            await panels["S00060"].send("panic")
            await panels["S00060"].send("low_battery")
            # Alarms drain first: a second area alert would be in before the battery report.
            await wait_until(
                lambda: any(b["shop_id"] == "S00060" for b in bodies(platform, "low_battery")),
                10,
                "the third panic and a report after it",
            )
            assert len(bodies(platform, "area_alert")) == 1

    asyncio.run(scenario())


def test_notices_queued_for_another_gateway_survive_a_kill_9(
    tmp_path, block_broker, police_broker, gateway_process
):
    """Police broker down: S00011's notices for GW-002's shops wait in GW-001's memory.

    GW-001 is killed, the broker comes back, GW-001 restarts: GW-002's shops among
    S00011's nearest each get the notice, once.
    """
    survey, gateway_of = split_survey(tmp_path)
    south = [s for s in expected_nearest("S00011") if gateway_of[s] == "GW-002"]
    assert south
    keys = make_mesh_keys(tmp_path / "keys", "GW-001", "GW-002")
    with Mosquitto(workdir=tmp_path / "block2-dir") as block2:
        gateways = {
            gid: split_gateway(
                tmp_path,
                gid,
                block_url=block.url,
                police_url=police_broker.url,
                survey=survey,
                gateway_process=gateway_process,
                mesh_keys=keys,
            )
            for gid, block in (("GW-002", block2), ("GW-001", block_broker))
        }
        gateways["GW-002"].start()  # its mesh session is made on the police broker
        police_broker.stop()
        gateways["GW-001"].start()

        async def scenario() -> None:
            far = {s: ShopPanel(BrokerConfig(url=block2.url), s) for s in south}
            async with (
                running(block_url=block_broker.url, shops=["S00011"]) as (panels, _),
                asyncio.TaskGroup() as tg,
            ):
                tasks = [tg.create_task(p.run(), name=f"panel[{s}]") for s, p in far.items()]
                for p in far.values():
                    await asyncio.wait_for(p.ready.wait(), 10)
                await panels["S00011"].send("panic")
                await wait_until(
                    lambda: gateways["GW-001"].status()["neighbour_notices"] > 0,
                    10,
                    "GW-001's own notices (the panic is journalled)",
                )
                await asyncio.to_thread(gateways["GW-001"].kill)
                await asyncio.to_thread(police_broker.start)
                await asyncio.to_thread(gateways["GW-001"].start)
                await wait_until(
                    lambda: all(far[s].notices for s in south),
                    60,
                    "GW-002's shops told through the police broker",
                )
                assert all(len(far[s].notices) == 1 for s in south)
                assert {far[s].notices[0].body["from_shop_id"] for s in south} == {"S00011"}
                for t in tasks:
                    t.cancel()

        asyncio.run(scenario())


def confirmed_shops(gw, alert_id: str) -> set[str]:
    """The shops the gateway's state says the block broker confirmed ``alert_id`` for."""
    state = Path(gw.config.parent, yaml.safe_load(gw.config.read_text())["state_dir"])
    try:
        saved = json.loads((state / "notices-confirmed.json").read_text())
    except FileNotFoundError:
        return set()
    return set(saved.get(alert_id, [0, []])[1])


def test_own_neighbours_not_yet_told_are_told_after_a_kill_9_and_only_once(
    block_broker, police_broker, start_field_gateway
):
    """Block broker down: a wired panic is journalled, its 10 notices wait in memory; kill -9.

    The broker comes back, the gateway restarts: each of the 10 nearest shops is told,
    once. Killed and restarted again once they were confirmed: nobody is told again.
    """
    shop, other = "S00011", "S00013"  # S00013 is one of the 10 nearest
    near = expected_nearest(shop)
    both = sorted(set(near) & set(expected_nearest(other)))
    assert both
    driver = {
        "kind": "line_serial",
        "name": "bus-1",
        "port": "",
        "devices": [{"address": 3, "shop_id": shop, "device_id": "pb-1"}],
    }
    with stub("panic_button", "--address", "3", "--heartbeat-s", "0") as bus:
        gw = start_field_gateway(
            {shop: [("pb-1", "panic_button")]},
            [{**driver, "port": bus.port}],
            rules={"disable": ["robbery-area-alert"]},  # the later panic is in the same cell
        )

        async def scenario() -> None:
            async with running(police_url=police_broker.url) as (_, platform):
                assert platform is not None
                await asyncio.to_thread(block_broker.stop)
                bus.send("press 3 1")
                await wait_until(lambda: bodies(platform, "panic"), 10, "the panic at the police")
                [panic] = bodies(platform, "panic")
                alert_id = panic["attrs"]["alert_id"]
                await asyncio.to_thread(gw.kill)
                await asyncio.to_thread(block_broker.start)
                async with running(block_url=block_broker.url, shops=near) as (
                    panels,
                    _,
                ):
                    await asyncio.to_thread(gw.start)
                    await wait_until(
                        lambda: all(panels[s].notices for s in near), 20, "the 10 nearest told"
                    )
                    for s in near:
                        [notice] = panels[s].notices
                        assert notice.body["alert_id"] == alert_id
                        assert notice.body["from_shop_id"] == shop
                    await wait_until(
                        lambda: confirmed_shops(gw, alert_id) == set(near),
                        10,
                        "the notices confirmed",
                    )

                    await asyncio.to_thread(gw.kill)
                    await asyncio.to_thread(gw.start)
                    # A later alert to shops of both: anything repeated would come before it.
                    await panels[other].send("panic")
                    await wait_until(
                        lambda: all(
                            panels[s].notices[-1].body["from_shop_id"] == other for s in both
                        ),
                        20,
                        "the later alert",
                    )
                    told = {s: [n.body["from_shop_id"] for n in panels[s].notices] for s in near}
                    assert told == {s: [shop, other] if s in both else [shop] for s in near}

        asyncio.run(scenario())
