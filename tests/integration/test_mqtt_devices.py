"""Zigbee2MQTT and Tasmota RF bridge devices through the real daemon, broker and police platform."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import yaml

from firmware_stubs.mqtt_client import client_for
from firmware_stubs.tasmota_rf_bridge import TasmotaRfBridge
from firmware_stubs.zigbee2mqtt import Zigbee2Mqtt
from gateway.mqtt.client import BrokerConfig
from tests.clients import expected_nearest, running, wait_until
from tests.field import bind_field_devices, start_learn
from tests.harness import TestGateway, init_config
from tests.simulation import Simulation

SHOP = "S00030"
DEVICES = {
    SHOP: [
        ("door-z", "door_contact"),
        ("sos-z", "panic_button"),
        ("leak-z", "leak_sensor"),
        ("rf-1", "rf433_button"),
    ]
}


def zigbee_driver(**sos: object) -> dict[str, object]:
    return {
        "kind": "mqtt_devices",
        "name": "zigbee",
        "devices": [
            {
                "shop": SHOP,
                "device": "door-z",
                "preset": "zigbee2mqtt.contact",
                "topic": f"zigbee2mqtt/{SHOP}-door",
            },
            {
                "shop": SHOP,
                "device": "sos-z",
                "preset": "zigbee2mqtt.sos",
                "topic": f"zigbee2mqtt/{SHOP}-sos",
                **sos,
            },
            {
                "shop": SHOP,
                "device": "leak-z",
                "preset": "zigbee2mqtt.water_leak",
                "topic": f"zigbee2mqtt/{SHOP}-leak",
            },
        ],
    }


RF_DRIVER = {
    "kind": "mqtt_devices",
    "name": "rfbridge",
    "devices": [
        {
            "shop": SHOP,
            "device": "rf-1",
            "preset": "tasmota.rf_bridge",
            "topic": "tele/rfbridge/RESULT",
            "code": "A1B2C3",
        }
    ],
}


def start(
    tmp_path, block_url: str, police_url: str, started: list[TestGateway], drivers
) -> TestGateway:
    config = init_config(
        tmp_path, block_url=block_url, police_url=police_url, status_interval_s=0.2
    )
    bind_field_devices(config, DEVICES, drivers)
    gw = TestGateway(config)
    started.append(gw)
    gw.start()
    return gw


@asynccontextmanager
async def devices(block_url: str) -> AsyncIterator[tuple[Zigbee2Mqtt, TasmotaRfBridge]]:
    """The Zigbee2MQTT and RF bridge stubs, publishing on the block broker."""
    client = client_for(BrokerConfig(url=block_url), client_id="test-devices", persistent=False)
    async with client:
        yield Zigbee2Mqtt(client), TasmotaRfBridge(client, "rfbridge")


def test_sos_press_reaches_neighbours_and_police_one_panic_per_burst_retained_state_is_not_news(
    tmp_path, block_broker, police_broker, gateway_process
):
    """Retained 'open' and 'emergency' at subscribe raise nothing; an SOS press alerts the 10 nearest and the police; an RF burst is one panic; junk and unknown codes are counted."""
    expected = expected_nearest(SHOP)

    async def before() -> None:
        async with devices(block_broker.url) as (zigbee, _):
            # Retained: the state at subscribe, not a new alarm.
            await zigbee.report(f"{SHOP}-door", {"contact": False}, retain=True)
            await zigbee.report(f"{SHOP}-sos", {"action": "emergency"}, retain=True)

    asyncio.run(before())
    gw = start(
        tmp_path, block_broker.url, police_broker.url, gateway_process, [zigbee_driver(), RF_DRIVER]
    )

    async def scenario() -> None:
        async with (
            running(block_url=block_broker.url, police_url=police_broker.url, shops=expected) as (
                panels,
                platform,
            ),
            devices(block_broker.url) as (zigbee, bridge),
        ):
            assert platform is not None

            def sent(device: str, kind: str) -> list[dict]:
                return [
                    d.body
                    for d in platform.unique
                    if (d.body["device_id"], d.body["kind"]) == (device, kind)
                ]

            await zigbee.press(f"{SHOP}-sos")
            await wait_until(
                lambda: all(panels[s].notices for s in expected) and sent("sos-z", "panic"),
                20,
                "notices and the panic",
            )
            [panic] = sent("sos-z", "panic")
            assert panic["shop_id"] == SHOP
            for shop in expected:
                assert panels[shop].notices[0].body["event_id"] == panic["id"]

            await bridge.press("A1B2C3", 8)
            await bridge.press("00ffee", 6)
            junk = client_for(
                BrokerConfig(url=block_broker.url), client_id="junk", persistent=False
            )
            async with junk:
                await junk.publish(f"zigbee2mqtt/{SHOP}-door", b"\xff\xfe\x00", qos=1)
                await junk.publish(f"zigbee2mqtt/{SHOP}-door", json.dumps({"weird": [1, 2]}), qos=1)
            # Still serving: later events come through, after everything above (order per shop).
            await zigbee.report(f"{SHOP}-door", {"contact": True})
            await zigbee.report(f"{SHOP}-leak", {"water_leak": True})
            await wait_until(
                lambda: sent("leak-z", "water_leak"), 20, "the water leak at the police"
            )
            assert len(sent("rf-1", "panic")) == 1
            assert sent("rf-1", "panic")[0]["attrs"]["value"] == "A1B2C3"
            assert len(sent("door-z", "door_close")) == 1
            assert sent("door-z", "door_open") == []
            assert len(sent("sos-z", "panic")) == 1  # the retained 'emergency' was not a press
            await wait_until(
                lambda: (
                    gw.status()["unknown_codes"].keys() == {"rfbridge.00FFEE"}
                    and gw.status()["rejected"].get("zigbee.unknown_shape") == 1
                ),
                10,
                "the unknown code listed and the junk counted",
            )
            rejected = gw.status()["rejected"]
            assert (rejected["rfbridge.unknown_code"], rejected["zigbee.malformed"]) == (1, 1)

    asyncio.run(scenario())
    assert gw.process is not None
    assert gw.process.poll() is None, gw.log_text()


def test_a_silent_device_is_lost_and_restored_when_heard(
    tmp_path, block_broker, police_broker, gateway_process
):
    """A device silent past its supervision interval raises supervision_lost; its next message restores it."""
    start(
        tmp_path,
        block_broker.url,
        police_broker.url,
        gateway_process,
        [zigbee_driver(supervision_s=1.5)],
    )

    async def scenario() -> None:
        async with (
            running(police_url=police_broker.url) as (_, platform),
            devices(block_broker.url) as (zigbee, _),
        ):
            assert platform is not None

            def kinds() -> list[str]:
                return [d.body["kind"] for d in platform.unique if d.body["device_id"] == "sos-z"]

            await wait_until(lambda: "supervision_lost" in kinds(), 15, "supervision_lost")
            await zigbee.report(f"{SHOP}-sos", {"battery": 97})
            await wait_until(lambda: "restore" in kinds(), 15, "the restore")
            assert kinds() == ["supervision_lost", "restore"]
            restore = next(d.body for d in platform.unique if d.body["kind"] == "restore")
            assert restore["attrs"]["of"] == "supervision_lost"

    asyncio.run(scenario())


def learn(config, device: str) -> subprocess.Popen[str]:
    """Start `lianfang learn` on the RF bridge driver and return once it listens for a press."""
    return start_learn(config, "--shop", SHOP, "--device", device, "--driver", "rfbridge")


def test_learn_takes_a_bridge_code_from_the_broker_or_the_running_gateway(
    tmp_path, block_broker, police_broker, gateway_process
):
    """With no gateway running, learn hears the bridge on the broker; with one, from its status; the learned button then raises panics."""
    config = init_config(
        tmp_path, block_url=block_broker.url, police_url=police_broker.url, status_interval_s=0.2
    )
    bind_field_devices(config, DEVICES, [RF_DRIVER])

    async def press(code: str) -> None:
        async with devices(block_broker.url) as (_, bridge):
            await bridge.press(code, 5)

    proc = learn(config, "rf-2")
    asyncio.run(press("d4e5f6"))
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Heard code D4E5F6" in out
    [driver] = [d for d in yaml.safe_load(config.read_text())["drivers"] if d["name"] == "rfbridge"]
    assert driver["devices"][-1] == {
        "shop": SHOP,
        "device": "rf-2",
        "preset": "tasmota.rf_bridge",
        "topic": "tele/rfbridge/RESULT",
        "code": "D4E5F6",
    }

    gw = TestGateway(config)
    gateway_process.append(gw)
    gw.start()
    proc = learn(config, "rf-3")
    asyncio.run(press("0a0b0c"))
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Heard code 0A0B0C" in out
    assert "rfbridge.0A0B0C" in gw.status()["unknown_codes"]

    async def learned_button_is_a_panic() -> None:
        async with running(police_url=police_broker.url) as (_, platform):
            assert platform is not None
            await press("D4E5F6")
            await wait_until(
                lambda: any(
                    d.body["device_id"] == "rf-2" and d.body["kind"] == "panic"
                    for d in platform.unique
                ),
                20,
                "the learned button's panic",
            )

    asyncio.run(learned_button_is_a_panic())


def test_simulate_plays_zigbee2mqtt_and_the_rf_bridge(tmp_path):
    """`lianfang simulate` starts the Zigbee2MQTT and RF bridge stubs; an SOS press and an RF press reach the police."""
    config = init_config(
        tmp_path, block_url="mqtt://127.0.0.1:1883", police_url="mqtt://127.0.0.1:1884"
    )
    bind_field_devices(config, DEVICES, [zigbee_driver(), RF_DRIVER])
    with Simulation(config) as sim:
        sim.send(f"zigbee sos {SHOP}-sos", "rfbridge press A1B2C3 6")
        sim.expect(f"POLICE panic {SHOP}/sos-z -")
        sim.expect(f"POLICE panic {SHOP}/rf-1 -")
        sim.quit()
