"""The default rules, levels, signed commands, area alerts and responses, over real brokers."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, time, timedelta

from firmware_stubs.police_commands import command_body, new_key, send, sign
from gateway.mqtt.client import BrokerConfig
from tests.clients import expected_nearest, local_moments, running, survey_rows, wait_until

CMD_TOPIC = "police/v1/L1/GW-001/cmd"


async def send_garbage(block: BrokerConfig, police: BrokerConfig) -> None:
    """Bad responses and mesh messages: each is counted and dropped (6 in all)."""
    await send(block, "lianfang/v1/shop/S00001/response", b"{nope")
    await send(block, "lianfang/v1/shop/S99999/response", b'{"alert_id":"x","response":"coming"}')
    await send(block, "lianfang/v1/shop/S00001/response", b'{"alert_id":"x","response":"maybe"}')
    await send(police, "police/v1/L1/mesh/GW-001/notify", b'{"alert_id":"x"}')
    await send(police, "police/v1/L1/mesh/GW-001/notify", b"\xff\xfe")
    unknown_sender = (
        b'{"alert_id":"x","from_gateway":"GW-999","notices":[{"shop_id":"S00001","notice":{}}]}'
    )
    await send(police, "police/v1/L1/mesh/GW-001/notify", unknown_sender)


def kinds_at(platform, shop: str) -> list[str]:
    return [d.body["kind"] for d in platform.unique if d.body["shop_id"] == shop]


def test_signed_commands_change_the_level_and_the_neighbour_set(
    block_broker, police_broker, start_gateway
):
    """Only the good command raises the level; then a panic alerts exactly the 20 nearest shops.

    Unsigned, badly signed, unknown-key, expired and replayed commands are refused and answered.
    """
    key, public = new_key()
    gw = start_gateway(
        status_interval_s=0.2,
        commands={"keys": {"platform-1": public}},
        # Two panics in one cell would also alert the whole cell (tested below).
        rules={"disable": ["robbery-area-alert"]},
    )
    police = BrokerConfig(url=police_broker.url)
    good = command_body("GW-001", "set_level", level="heightened")
    stranger, _ = new_key()
    old = datetime.now(UTC) - timedelta(minutes=30)
    bad = [
        (b'{"key_id":"platform-1","body":"{}"}', "unsigned"),
        (sign(stranger, "platform-1", good), "bad_signature"),
        (sign(key, "platform-9", good), "unknown_key"),
        (
            sign(
                key,
                "platform-1",
                command_body("GW-001", "set_level", level="heightened", issued_at=old),
            ),
            "expired",
        ),
    ]
    rows = {r["shop_id"] for r in survey_rows()}

    async def scenario() -> None:
        async with running(
            block_url=block_broker.url, police_url=police_broker.url, shops=list(rows)
        ) as (panels, platform):
            assert platform is not None
            for payload, _ in bad:
                await send(police, CMD_TOPIC, payload)
            await send_garbage(BrokerConfig(url=block_broker.url), police)
            await wait_until(
                lambda: kinds_at(platform, None).count("command_refused") == 4, 10, "4 refusals"
            )
            await wait_until(lambda: sum(gw.status()["rejected"].values()) == 5, 10, "5 rejected")
            # An unknown shop's answer never reaches the gateway: it subscribes to its own
            # shops' response topics only.
            assert gw.status()["rejected"] == {
                "responses.invalid": 2,
                "mesh.invalid": 1,
                "mesh.unsigned": 2,  # mesh notices are signed (issue 12)
            }
            assert gw.status()["mesh_notices_relayed"] == 0
            assert gw.status()["level"] == "everyday"
            await panels["S00040"].send("panic")
            await wait_until(lambda: sum(bool(p.notices) for p in panels.values()) >= 10, 10, "10")
            await asyncio.sleep(0.3)
            assert {s for s, p in panels.items() if p.notices} == set(expected_nearest("S00040"))

            await send(police, CMD_TOPIC, sign(key, "platform-1", good))
            await wait_until(lambda: "command_ack" in kinds_at(platform, None), 10, "the ack")
            await send(police, CMD_TOPIC, sign(key, "platform-1", good))  # replayed
            await wait_until(
                lambda: kinds_at(platform, None).count("command_refused") == 5, 10, "the replay"
            )
            await wait_until(lambda: gw.status()["level"] == "heightened", 10, "the new level")
            for p in panels.values():
                p.notices.clear()
            await panels["S00070"].send("panic")
            twenty = expected_nearest("S00070", count=20)
            assert len(twenty) == 20
            await wait_until(lambda: sum(bool(p.notices) for p in panels.values()) >= 20, 10, "20")
            await asyncio.sleep(0.3)
            assert {s for s, p in panels.items() if p.notices} == set(twenty)

            answers = [d.body for d in platform.unique if d.body["kind"].startswith("command_")]
            refused = [a["attrs"]["reason"] for a in answers if a["kind"] == "command_refused"]
            assert refused == [reason for _, reason in bad] + ["replayed"]
            [ack] = [a for a in answers if a["kind"] == "command_ack"]
            assert ack["attrs"]["level"] == "heightened"
            assert ack["attrs"]["previous_level"] == "everyday"

            # A restart keeps the level and the memory of used nonces.
            assert gw.stop() == 0
            gw.start()
            await wait_until(lambda: gw.status()["level"] == "heightened", 10, "the kept level")
            await send(police, CMD_TOPIC, sign(key, "platform-1", good))
            await wait_until(
                lambda: kinds_at(platform, None).count("command_refused") == 6,
                10,
                "the replay after the restart refused",
            )

    asyncio.run(scenario())


def test_a_door_opening_while_closed_is_an_intrusion_and_while_open_is_not(
    block_broker, police_broker, start_gateway
):
    """S00011 opens 08:30, closes 23:30: a door in the night is an intrusion, by day it is not.

    An early disarm from the keypad holds until opening time and is forwarded.
    """
    gw = start_gateway(rules={"timezone": "Asia/Shanghai"})

    async def scenario() -> None:
        async with running(
            block_url=block_broker.url,
            police_url=police_broker.url,
            shops=["S00011", "S00012", "S00013"],
        ) as (panels, platform):
            assert platform is not None
            # The block's closed night (every shop here shuts by 23:30, none opens before 08:00).
            disarmed, first_door, _, later_door = local_moments(time(23, 30), time(8, 0), 4)
            [open_hours] = local_moments(time(8, 30), time(21, 0), 1)
            await panels["S00011"].send("door_open", ts=first_door)
            await panels["S00012"].send("door_open", ts=open_hours)
            await panels["S00013"].send("disarm", ts=disarmed)
            await panels["S00013"].send("door_open", ts=first_door)
            await wait_until(
                lambda: (
                    "action_failed" in kinds_at(platform, "S00011")
                    and len(kinds_at(platform, "S00013")) == 2
                ),
                10,
                "the intrusion, its siren report and the disarmed shop's events",
            )
            await asyncio.sleep(0.3)
            assert kinds_at(platform, "S00011") == ["door_open", "intrusion", "action_failed"]
            assert kinds_at(platform, "S00012") == ["door_open"]
            assert kinds_at(platform, "S00013") == ["disarm", "door_open"]
            by_kind = {
                d.body["kind"]: d.body for d in platform.unique if d.body["shop_id"] == "S00011"
            }
            assert by_kind["intrusion"]["attrs"]["cause_event_id"] == by_kind["door_open"]["id"]
            assert by_kind["intrusion"]["attrs"]["priority"] == "alarm"
            assert by_kind["intrusion"]["attrs"]["rules"] == ["alarms-forward"]
            failed = by_kind["action_failed"]["attrs"]
            assert (failed["action"], failed["rule"]) == ("siren", "intrusion-when-armed")
            assert "no siren driver" in failed["reason"]

            # The early disarm survives a restart; S00011 is still armed by its hours.
            assert gw.stop() == 0
            gw.start()
            await panels["S00013"].send("door_open", ts=later_door)
            await panels["S00011"].send("door_open", ts=later_door)
            await wait_until(
                lambda: (
                    kinds_at(platform, "S00011").count("intrusion") == 2
                    and len(kinds_at(platform, "S00013")) == 3
                ),
                10,
                "the second intrusion and S00013's door",
            )
            await asyncio.sleep(0.3)
            assert kinds_at(platform, "S00013") == ["disarm", "door_open", "door_open"]

    asyncio.run(scenario())


def test_two_robberies_in_one_cell_alert_the_whole_cell_once_and_answers_reach_the_police(
    block_broker, police_broker, start_gateway
):
    """Panics at two shops of cell L1-M01 send one area alert to all 87 shops; a third does not.

    A neighbour's "coming" and the origin's cancel are forwarded with the alert id.
    """
    start_gateway()
    rows = [r["shop_id"] for r in survey_rows()]

    async def scenario() -> None:
        async with running(
            block_url=block_broker.url, police_url=police_broker.url, shops=rows
        ) as (panels, platform):
            assert platform is not None

            def area_notices(shop: str) -> list[dict]:
                return [n.body for n in panels[shop].notices if n.body.get("kind") == "area_alert"]

            await panels["S00011"].send("panic")
            await wait_until(lambda: panels["S00010"].notices, 10, "the neighbour alert")
            alert_id = panels["S00010"].notices[0].body["alert_id"]
            await panels["S00010"].respond(alert_id, "coming")
            await panels["S00011"].send("cancel")
            await panels["S00050"].send("panic")
            await wait_until(
                lambda: all(area_notices(s) for s in rows), 10, "the area alert at every shop"
            )
            await panels["S00060"].send("panic")
            await panels["S00001"].send("low_battery")
            await wait_until(
                lambda: (
                    "low_battery" in kinds_at(platform, "S00001")
                    and "panic" in kinds_at(platform, "S00060")
                    and "response" in kinds_at(platform, "S00010")
                ),
                10,
                "every event at the police",
            )
            await asyncio.sleep(0.5)
            assert all(len(area_notices(s)) == 1 for s in rows)
            [area] = [d.body for d in platform.unique if d.body["kind"] == "area_alert"]
            assert area["attrs"]["cell"] == "L1-M01"
            assert {a["shop_id"] for a in area["attrs"]["alarms"]} == {"S00011", "S00050"}
            assert area["attrs"]["shops_alerted"] == 87
            [response] = [d.body for d in platform.unique if d.body["kind"] == "response"]
            assert response["attrs"]["alert_id"] == alert_id
            assert response["attrs"]["response"] == "coming"
            assert response["attrs"]["coming"] == 1
            assert response["attrs"]["origin_shop_id"] == "S00011"
            [cancel] = [d.body for d in platform.unique if d.body["kind"] == "cancel"]
            assert cancel["attrs"]["alert_id"] == alert_id
            assert cancel["attrs"]["within_cancel_window"] is True
            [panic] = [
                d.body
                for d in platform.unique
                if d.body["shop_id"] == "S00011" and d.body["kind"] == "panic"
            ]
            assert panic["attrs"]["alert_id"] == alert_id
            [battery] = [d.body for d in platform.unique if d.body["kind"] == "low_battery"]
            assert battery["attrs"]["priority"] == "trouble"

    asyncio.run(scenario())
