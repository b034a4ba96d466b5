"""`lianfang simulate`: every field device of a config gets its stub, and events reach the police."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

from tests.field import MODBUS_DOOR, bind_field_devices
from tests.harness import READY_S, init_config

DRIVERS = [
    {
        "kind": "line_serial",
        "name": "bus-1",
        "port": "/dev/ttyUSB0",
        "devices": [{"address": 3, "shop_id": "S00011", "device_id": "pb-1"}],
    },
    MODBUS_DOOR,
    {
        "kind": "rf433",
        "name": "rf-1",
        "port": "socket://192.168.1.60:4001",
        "buttons": [{"code": "A1B2C3", "shop_id": "S00013", "device_id": "rb-1"}],
    },
]
DEVICES = {
    "S00011": [("pb-1", "panic_button")],
    "S00012": [("io-1", "io_module")],
    "S00013": [("rb-1", "rf433_button")],
}


def test_simulate_drives_every_kind_of_field_device_to_the_police(tmp_path):
    """A wired press (and its 10 neighbour notices), a Modbus door, a 433 MHz press and a panel event each reach the police."""
    config = init_config(
        tmp_path, block_url="mqtt://127.0.0.1:1883", police_url="mqtt://127.0.0.1:1884"
    )
    bind_field_devices(config, DEVICES, DRIVERS)
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "simulate", "--config", str(config)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its brokers and gateway go with it on a kill
    )
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()  # type: ignore[arg-type]

    def wait_for(text: str, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while not any(text in line for line in list(lines)):
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, f"no {text!r} in {lines}"
            time.sleep(0.05)

    try:
        wait_for("READY", READY_S)
        assert proc.stdin is not None
        for command in (
            "bus-1 press 3 2",
            "io-1 open 1 0",
            "rf-1 press A1B2C3",
            "panel S00020 fire",
        ):
            proc.stdin.write(command + "\n")
            proc.stdin.flush()
        wait_for("POLICE panic S00011/pb-1 2")
        wait_until_count = time.monotonic() + 30
        while sum("from S00011" in line for line in list(lines)) < 10:
            assert time.monotonic() < wait_until_count, f"10 notices for S00011 in {lines}"
            time.sleep(0.05)
        wait_for("POLICE door_open S00012/io-1 1")
        wait_for("POLICE panic S00013/rb-1 -")
        wait_for("POLICE fire S00020/panel-1 -")
        proc.stdin.write("quit\n")
        proc.stdin.flush()
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the brokers and gateway it started too
            proc.wait()
