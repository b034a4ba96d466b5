"""``lianfang simulate``: a whole block on one machine, from an installer's config.

Every field driver in the config gets its firmware stub (wired buses and 433
MHz receivers on pty pairs, Modbus modules on loopback TCP or a pty), the
block and police brokers are private Mosquitto instances, and the real
gateway runs on a copy of the config rewired to them. Commands on stdin go to
a driver's stub: ``DRIVER COMMAND...`` (``bus-1 press 3``, ``io-1 open 1 0``,
``rf-1 press A1B2C3``); every event the police platform receives is printed
as ``POLICE kind shop/device zone``. Each stub also listens on its own control
port (printed at start) for scripts.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

from firmware_stubs.police_platform import Delivery, PolicePlatform
from firmware_stubs.process import StubProcess
from gateway.broker import Mosquitto, free_port
from gateway.config import GatewayConfig
from gateway.config_file import load_config
from gateway.mqtt import BrokerConfig
from gateway.process import GatewayProcess

FIELD_KINDS = ("line_serial", "rf433", "modbus")


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
                asyncio.run(_serve(config, police.url, stubs, console))
            finally:
                gateway.stop()
        return 0
    finally:
        for stub in stubs.values():
            stub.stop()
        shutil.rmtree(workdir, ignore_errors=True)


async def _serve(
    config: GatewayConfig, police_url: str, stubs: dict[str, StubProcess], console: Console
) -> None:
    def show(delivery: Delivery) -> None:
        body = delivery.body
        where = f"{body.get('shop_id') or '-'}/{body['device_id']}"
        print(f"POLICE {body['kind']} {where} {body.get('zone') or '-'}", flush=True)

    platform = PolicePlatform(
        BrokerConfig(url=police_url), client_id=f"simulate-{config.gateway.id}", on_event=show
    )
    loop = asyncio.get_running_loop()
    async with asyncio.TaskGroup() as tg:
        listener = tg.create_task(platform.run(), name="police")
        await asyncio.wait_for(platform.ready.wait(), 10)
        print("READY", flush=True)
        while line := (await loop.run_in_executor(None, sys.stdin.readline)).strip():
            if line == "quit":
                break
            name, _, command = line.partition(" ")
            if name not in stubs or not command:
                console.print(f"[yellow]give DRIVER COMMAND; drivers: {', '.join(stubs)}[/]")
                continue
            stubs[name].send(command)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(0.5)  # the last events still reach the screen
        listener.cancel()
