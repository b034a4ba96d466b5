"""`lianfang run` keeps in memory only what the running gateway uses.

The real daemon is started with ``PYTHONPROFILEIMPORTTIME`` set: Python then
writes every module it imports to stderr (the gateway's log), so the test reads
what a started gateway imported, not what a test process happens to hold.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.harness import TestGateway, init_config

COMMAND_LINE = ("typer", "click", "rich", "gateway.cli.main", "gateway.cli.options")
"""The installer's command line: not the daemon's business."""
NOT_CONFIGURED = (
    "pymodbus",  # Modbus driver
    "drivers.modbus",  # the drivers themselves: only their settings (decision 102)
    "drivers.line_serial",
    "drivers.rf433",
    "drivers.mqtt_devices",
    "serial",  # serial drivers (433 MHz receiver, line protocol, modem)
    "serial_asyncio_fast",
    "httpx",  # webhook forwarder
    "gateway.sms.service",  # SMS to shops
    "gateway.status_page",  # local status page
    "html",
)
"""What only a driver, forwarder or service that Changping Road's default config has not uses."""


def imported_modules(log: str) -> set[str]:
    """Modules named by ``-X importtime`` lines (``import time: self | total | name``)."""
    return {
        line.rsplit("|", 1)[1].strip()
        for line in log.splitlines()
        if line.startswith("import time:") and line.count("|") == 2
    }


def test_the_daemon_imports_neither_the_command_line_nor_what_its_config_does_not_use(
    start_gateway: Callable[..., TestGateway], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPROFILEIMPORTTIME", "1")
    gw = start_gateway()
    modules = imported_modules(gw.log_text())
    assert {"gateway.app", "drivers.mqtt_ingest", "gateway.forwarders.mqtt_police"} <= modules
    assert modules.isdisjoint(COMMAND_LINE), modules & set(COMMAND_LINE)
    assert modules.isdisjoint(NOT_CONFIGURED), modules & set(NOT_CONFIGURED)


NOT_MAPPED = ("_yaml.",)
"""The YAML parser's extension: the config is read in the config's child (decision 101)."""


def test_the_running_daemon_has_not_the_yaml_parser_in_memory(
    start_gateway: Callable[..., TestGateway],
) -> None:
    # From the running process's mappings: the import log also holds the config's child.
    gw = start_gateway()
    maps = Path(f"/proc/{gw.pid}/maps").read_text()
    files = {Path(line.split()[-1]).name for line in maps.splitlines() if "/" in line}
    assert {f for f in files if f.startswith(NOT_MAPPED)} == set()
    assert any(f.startswith("_pydantic_core.") for f in files)  # the mappings are all there


UNBUILT_AFTER_IMPORT = """
import gateway.app
from drivers.base import DeviceBinding, DriverConfig
from gateway.config.model import Strict as ConfigSection
from gateway.forwarders.base import ForwarderConfig
from gateway.mqtt.client import BrokerConfig, TlsConfig
from rules.models import CommandsConfig, RulesConfig, Strict as RulePart

def family(cls):
    yield cls
    for sub in cls.__subclasses__():
        yield from family(sub)

bases = (DeviceBinding, DriverConfig, ConfigSection, ForwarderConfig, BrokerConfig, TlsConfig,
         CommandsConfig, RulesConfig, RulePart)
print(sorted({c.__qualname__ for b in bases for c in family(b) if c.__pydantic_complete__}))
"""


def test_the_daemons_imports_build_no_config_validator() -> None:
    # The config is validated in a forked child (decision 75): a validator built in the
    # daemon for a config model would stay in its memory unused.
    built = subprocess.run(
        [sys.executable, "-c", UNBUILT_AFTER_IMPORT], capture_output=True, text=True, check=True
    ).stdout
    assert built.strip() == "[]"


NOTING_PLUGIN = """
import os
from pathlib import Path

with Path(os.environ["NOTING_PLUGIN_LOG"]).open("a") as log:
    log.write(f"{os.getpid()} {os.getppid()}\\n")


class NotingPlugin:
    def new_schema_validator(self, *args, **kwargs):
        return None, None, None


plugin = NotingPlugin()
"""
"""A pydantic plugin that writes down each process that loads it (and that one's parent)."""


def install_noting_plugin(site: Path) -> Path:
    """The plugin as a package installed in ``site`` (a module, its entry point); its log."""
    site.mkdir()
    (site / "noting_plugin.py").write_text(NOTING_PLUGIN)
    dist = site / "noting_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: noting-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[pydantic]\nnoting = noting_plugin:plugin\n")
    return site / "loaded-by.txt"


def test_the_daemon_loads_no_pydantic_plugin_installed_beside_it(
    start_gateway: Callable[..., TestGateway], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    log = install_noting_plugin(tmp_path / "site")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "site"))
    monkeypatch.setenv("NOTING_PLUGIN_LOG", str(log))
    monkeypatch.delenv("PYDANTIC_DISABLE_PLUGINS", raising=False)
    # pydantic does load it: a process that builds a validator writes itself down.
    other = subprocess.run(
        [sys.executable, "-c", "import os, gateway.events; print(os.getpid())"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert other in log.read_text().split()
    gw = start_gateway()  # `lianfang init` before it loads the plugin too: its own PID
    # Neither the daemon nor its config's child (whose parent it is).
    assert str(gw.pid) not in log.read_text().split()


HANDED_OVER = """
import sys
from pathlib import Path

import gateway.app
from gateway.config.apart import load_config_apart

config = load_config_apart(Path(sys.argv[1]))
assert [d.kind for d in config.drivers] == ["mqtt_ingest"], config.drivers
assert [f.kind for f in config.forwarders] == ["police_mqtt"], config.forwarders
print(" ".join(sorted(m for m in sys.modules if m.startswith(("drivers.", "gateway.forwarders.")))))
"""
UNUSED_KINDS = (
    "drivers.line_serial_config",
    "drivers.modbus_config",
    "drivers.mqtt_devices_config",
    "drivers.device_maps",
    "gateway.forwarders.dc09",
    "gateway.forwarders.dc09_codes",
    "gateway.forwarders.webhook",
)
"""Settings and forwarders of kinds Changping Road's default config does not use (decision 108;
the 433 MHz settings stay: a reload tells learned buttons by their class)."""


def test_the_daemon_holds_only_the_settings_of_the_kinds_its_config_uses(tmp_path: Path) -> None:
    # The config's child validates against every kind; the daemon unpickles what the
    # config holds and so imports only those kinds' settings.
    config = init_config(
        tmp_path, block_url="mqtt://127.0.0.1:1883", police_url="mqtt://127.0.0.1:1884"
    )
    held = subprocess.run(
        [sys.executable, "-c", HANDED_OVER, str(config)], capture_output=True, text=True, check=True
    ).stdout.split()
    assert {"drivers.mqtt_ingest_config", "gateway.forwarders.mqtt_police"} <= set(held)
    assert set(held).isdisjoint(UNUSED_KINDS), set(held) & set(UNUSED_KINDS)
