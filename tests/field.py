"""Field devices for the tests: stub processes on ptys, and configs that bind them."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from firmware_stubs.process import StubProcess
from gateway.device_state import DeviceStates
from tests.harness import READY_S

MODBUS_DOOR: dict[str, Any] = {
    "kind": "modbus",
    "name": "io-1",
    "host": "192.168.1.50:502",
    "modules": [
        {
            "unit": 1,
            "shop_id": "S00012",
            "device_id": "io-1",
            "inputs": [{"zone": "1", "address": 0}],
        }
    ],
}
"""A Modbus TCP module with one door, shop S00012's device io-1 (an io_module)."""


def bind_field_devices(
    config: Path, devices: dict[str, list[tuple[str, str]]], drivers: list[dict[str, Any]]
) -> None:
    """Add ``devices`` (shop -> [(id, kind)]) to the shops and append ``drivers``."""
    data = yaml.safe_load(config.read_text())
    for shop in data["shops"]:
        for device_id, kind in devices.get(shop["id"], []):
            shop["devices"].append({"id": device_id, "kind": kind})
    data["drivers"].extend(drivers)
    config.write_text(yaml.safe_dump(data, sort_keys=False))


@contextmanager
def stub(name: str, *args: str, log: Path | None = None) -> Iterator[StubProcess]:
    """A running stub on a fresh pty; stopped (by its PID) on the way out."""
    process = StubProcess(name, "--pty", *args, log=log)
    try:
        process.start(READY_S)
        yield process
    finally:
        process.stop()


def start_learn(config: Path, *args: str) -> subprocess.Popen[str]:
    """Start `lianfang learn ARGS` on ``config``; return once it listens for a press."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gateway",
            "learn",
            *args,
            "--config",
            str(config),
            "--timeout",
            "30",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().startswith("Press the button")
    return proc


def cli_json(command: str, config: Path) -> Any:
    """Run ``lianfang COMMAND --config CONFIG --json`` and parse what it prints."""
    done = subprocess.run(
        [sys.executable, "-m", "gateway", command, "--config", str(config), "--json"],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(done.stdout)


async def flush_device_states(states: DeviceStates) -> None:
    """Write ``states`` to its database, as the gateway does on its way out."""
    task = asyncio.create_task(states.run(), name="device-states")
    await asyncio.sleep(0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
