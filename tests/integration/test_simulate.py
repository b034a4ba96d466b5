"""`lianfang simulate`: every field device of a config gets its stub, and events reach the police."""

from __future__ import annotations

from tests.field import MODBUS_DOOR, bind_field_devices
from tests.harness import init_config
from tests.simulation import Simulation

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
    with Simulation(config) as sim:
        sim.send("bus-1 press 3 2", "io-1 open 1 0", "rf-1 press A1B2C3", "panel S00020 fire")
        sim.expect("POLICE panic S00011/pb-1 2")
        sim.wait_for(
            lambda lines: sum("from S00011" in line for line in lines) >= 10,
            "10 notices for S00011",
            30,
        )
        sim.expect("POLICE door_open S00012/io-1 1")
        sim.expect("POLICE panic S00013/rb-1 -")
        sim.expect("POLICE fire S00020/panel-1 -")
        sim.quit()
