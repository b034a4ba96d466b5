"""``lianfang simulate``: a whole block on one machine, from an installer's config.

Every field driver in the config gets its firmware stub (wired buses and 433
MHz receivers on pty pairs, Modbus modules on loopback TCP or a pty), the
block and police brokers are private Mosquitto instances, and the real
gateway runs on a copy of the config rewired to them. Commands on stdin go to
a driver's stub: ``DRIVER COMMAND...`` (``bus-1 press 3``, ``io-1 open 1 0``,
``rf-1 press A1B2C3``, ``sms receive +8675487368886 9#`` to the GSM modem
when the config has one, ``zigbee sos S00030-sos`` to an ``mqtt_devices``
driver's Zigbee2MQTT or Tasmota RF bridge stub), or ``panel SHOP KIND`` to a
shop's MQTT panel; every
event the police platform receives is printed as ``POLICE kind shop/device
zone``, every neighbour alert as ``NOTICE shop from SHOP distance bearing``.
Each stub also listens on its own control port (printed at start) for scripts.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import shutil
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiomqtt
import yaml
from rich.console import Console
from rich.table import Table

from firmware_stubs.mqtt_client import client_for
from firmware_stubs.police_platform import Delivery, PolicePlatform
from firmware_stubs.process import StubProcess
from gateway.config.file import load_config
from gateway.config.model import GatewayConfig
from gateway.mqtt.client import BrokerConfig
from lab.broker import Mosquitto, free_port
from lab.process import GatewayProcess

FIELD_KINDS = ("line_serial", "rf433", "modbus")
NOTIFY = "lianfang/v1/shop/+/notify"


def stub_for(driver: dict[str, Any], control: int, log: Path) -> tuple[StubProcess, str]:
    """The stub process that plays ``driver``'s devices, and the line that says it is up."""
    args = ["--control", f"127.0.0.1:{control}"]
    kind = driver["kind"]
    if kind == "line_serial":
        addresses = [a for d in driver["devices"] for a in ("--address", str(d["address"]))]
        beats = [d["supervision_s"] / 3 for d in driver["devices"] if d.get("supervision_s")]
        hb = ["--heartbeat-s", f"{min(beats, default=30):g}"]
        return StubProcess("panic_button", "--pty", *addresses, *hb, *args, log=log), "PTY "
    if kind == "rf433":
        return StubProcess("rf433_receiver", "--pty", *args, log=log), "PTY "
    units = ",".join(str(m["unit"]) for m in driver["modules"])
    if driver.get("host"):
        driver["host"] = f"127.0.0.1:{free_port()}"
        where = ["--tcp", driver["host"]]
        return StubProcess("modbus_io", *where, "--units", units, *args, log=log), "READY"
    return StubProcess("modbus_io", "--pty", "--units", units, *args, log=log), "PTY "


def mqtt_stub_for(
    driver: dict[str, Any], block_url: str, control: int, log: Path
) -> StubProcess | None:
    """The stub that publishes as an ``mqtt_devices`` driver's devices, if one plays them.

    Zigbee2MQTT devices get the Zigbee2MQTT stub (under their base topic), RF
    bridge buttons the Tasmota RF bridge stub (under the bridge's topic).
    """
    args = ["--broker", block_url, "--control", f"127.0.0.1:{control}"]
    for device in driver["devices"]:
        preset, topic = device.get("preset") or "", device["topic"]
        if preset.startswith("zigbee2mqtt."):
            base = topic.split("/", 1)[0]
            return StubProcess("zigbee2mqtt", "--base-topic", base, *args, log=log)
        if preset == "tasmota.rf_bridge" and topic.count("/") == 2:
            bridge = topic.split("/")[1]
            return StubProcess("tasmota_rf_bridge", "--topic", bridge, *args, log=log)
    return None


def _start_mqtt_stub(
    driver: dict[str, Any],
    block_url: str,
    workdir: Path,
    stubs: dict[str, StubProcess],
    table: Table,
) -> None:
    control = free_port()
    stub = mqtt_stub_for(driver, block_url, control, workdir / f"{driver['name']}.log")
    if stub is None:
        return
    stubs[driver["name"]] = stub
    stub.start(ready="READY")
    table.add_row(driver["name"], stub.args[2], block_url, str(control))


def rewired(raw: dict[str, Any], workdir: Path, block: str, police: str) -> dict[str, Any]:
    """The installer's config pointed at the simulation: brokers, state, no TLS."""
    raw["state_dir"] = str(workdir / "state")
    raw["broker"] = {"url": block}
    raw["status_interval_s"] = 1
    for forwarder in raw.get("forwarders", []):
        if forwarder.get("kind") == "police_mqtt":
            forwarder["broker"] = {"url": police}
    return raw


def run_simulate(config_path: Path) -> int:
    """Simulate the block of ``config_path`` until ``quit`` or end of input; the exit code."""
    console = Console(stderr=True)
    config = load_config(config_path)
    raw = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    workdir = Path(tempfile.mkdtemp(prefix="lianfang-simulate-"))
    stubs: dict[str, StubProcess] = {}
    try:
        with (
            Mosquitto(workdir=workdir / "block-broker") as block,
            Mosquitto(workdir=workdir / "police-broker") as police,
        ):
            rewired(raw, workdir, block.url, police.url)
            table = Table(title="Simulated field buses")
            for column in ("driver", "stub", "gateway end", "control"):
                table.add_column(column)
            for driver in raw.get("drivers", []):
                if driver["kind"] == "mqtt_devices":
                    _start_mqtt_stub(driver, block.url, workdir, stubs, table)
                    continue
                if driver["kind"] not in FIELD_KINDS:
                    continue
                control = free_port()
                stub, ready = stub_for(driver, control, workdir / f"{driver['name']}.log")
                stubs[driver["name"]] = stub
                port = stub.start(ready=ready)
                if port:
                    driver["port"] = port
                table.add_row(
                    driver["name"], stub.args[2], port or driver.get("host", ""), str(control)
                )
            if raw.get("sms"):
                control = free_port()
                stub = StubProcess(
                    "gsm_modem", "--pty", "--control", f"127.0.0.1:{control}",
                    log=workdir / "sms.log",
                )  # fmt: skip
                stubs["sms"] = stub
                raw["sms"]["port"] = stub.start()
                table.add_row("sms", stub.args[2], raw["sms"]["port"], str(control))
            simulated = workdir / "lianfang.yaml"
            simulated.write_text(yaml.safe_dump(raw, sort_keys=False, allow_unicode=True))
            gateway = GatewayProcess(simulated, log=workdir / "gateway.log")
            gateway.start()
            console.print(table)
            console.print(
                f"Gateway {config.gateway.id} running (pid {gateway.pid}); type DRIVER COMMAND, "
                "e.g. 'bus-1 press 3', or quit"
            )
            try:
                asyncio.run(_serve(config, (block.url, police.url), stubs, console))
            finally:
                gateway.stop()
        return 0
    finally:
        for stub in stubs.values():
            stub.stop()
        shutil.rmtree(workdir, ignore_errors=True)


async def _serve(
    config: GatewayConfig,
    urls: tuple[str, str],
    stubs: dict[str, StubProcess],
    console: Console,
) -> None:
    block_url, police_url = urls

    def show(delivery: Delivery) -> None:
        body = delivery.body
        where = f"{body.get('shop_id') or '-'}/{body['device_id']}"
        print(f"POLICE {body['kind']} {where} {body.get('zone') or '-'}", flush=True)

    platform = PolicePlatform(
        BrokerConfig(url=police_url), client_id=f"simulate-{config.gateway.id}", on_event=show
    )
    block = client_for(BrokerConfig(url=block_url), client_id="simulate-block", persistent=False)
    seq = itertools.count(1)
    loop = asyncio.get_running_loop()
    async with block, asyncio.TaskGroup() as tg:
        await block.subscribe(NOTIFY, qos=1)
        listeners = [
            tg.create_task(platform.run(), name="police"),
            tg.create_task(_show_notices(block), name="notices"),
        ]
        await asyncio.wait_for(platform.ready.wait(), 10)
        print("READY", flush=True)
        while line := (await loop.run_in_executor(None, sys.stdin.readline)).strip():
            if line == "quit":
                break
            name, _, command = line.partition(" ")
            if name == "panel" and len(command.split()) == 2:
                shop, kind = command.split()
                body = {"device_id": "panel-1", "kind": kind, "seq": next(seq), "ts": _now()}
                await block.publish(f"lianfang/v1/shop/{shop}/event", json.dumps(body), qos=1)
            elif name in stubs and command:
                stubs[name].send(command)
            else:
                drivers = ", ".join(stubs) or "none"
                console.print(
                    f"[yellow]give DRIVER COMMAND (drivers: {drivers}) or panel SHOP KIND[/]"
                )
        await asyncio.sleep(0.5)  # the last events still reach the screen
        for listener in listeners:
            listener.cancel()


async def _show_notices(block: aiomqtt.Client) -> None:
    async for message in block.messages:
        shop = str(message.topic).split("/")[3]
        with contextlib.suppress(ValueError, KeyError, TypeError):
            body = json.loads(bytes(message.payload))
            print(
                f"NOTICE {shop} from {body['from_shop_id']} {body['distance_m']:.0f} m "
                f"{body['bearing']}",
                flush=True,
            )


def _now() -> str:
    return datetime.now(UTC).isoformat()
