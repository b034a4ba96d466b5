"""Pair a 433 MHz button: wait for its code, then write the binding into ``lianfang.yaml``.

The button is heard by a receiver module (an ``rf433`` driver) or by a Tasmota
RF bridge (an ``mqtt_devices`` driver with ``tasmota.rf_bridge`` devices). The
code is taken from the running gateway (its status lists codes it heard but
does not know) or, when no gateway is running here, from the receiver's port
or the bridge's topic directly. The config is edited round-trip (ruamel.yaml keeps the
installer's comments, order and quoting), validated as a whole, backed up to
``lianfang.yaml.bak`` and replaced atomically; a config that would not load is
never written.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import Callable
from pathlib import Path

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from drivers.device_maps import code_of, decode
from drivers.mqtt_devices_config import MqttDevicesConfig
from drivers.rf433 import CodeReader
from drivers.rf433_config import Rf433Config
from drivers.serial_port import open_serial, read_some
from gateway.cli.config_edit import replace_checked
from gateway.config.model import GatewayConfig
from gateway.errors import ConfigError, ConfigProblem
from gateway.mqtt.link import MqttLink

POLL_S = 0.2
RF_BRIDGE = "tasmota.rf_bridge"

LearningDriver = Rf433Config | MqttDevicesConfig
"""A driver that hears 433 MHz codes: a receiver module, or RF bridges on MQTT."""


def learn_driver(config: GatewayConfig, name: str | None, *, file: str) -> LearningDriver:
    """The 433 MHz driver to pair with: ``name``, or the only one."""
    found: list[LearningDriver] = [
        d
        for d in config.drivers
        if isinstance(d, Rf433Config) or (isinstance(d, MqttDevicesConfig) and _bridge_topics(d))
    ]
    chosen = [d for d in found if name is None or d.name == name]
    if len(chosen) == 1:
        return chosen[0]
    names = ", ".join(d.name for d in found) or "none"
    if not found:
        why = f"no rf433 driver configured, nor an mqtt_devices driver with {RF_BRIDGE} devices"
    elif name is not None:
        why = f"no rf433 driver named {name!r}"
    else:
        why = "more than one rf433 driver; choose one with --driver"
    raise ConfigError([ConfigProblem(file, "drivers", f"{why} (rf433 drivers: {names})")])


async def next_code(
    config: GatewayConfig,
    driver: LearningDriver,
    timeout_s: float,
    *,
    listening: Callable[[str], None],
) -> str:
    """The next code pressed; from the running gateway's status if it runs, else from the port.

    ``listening(how)`` is called once a press will be heard.
    """
    status_file = config.state_dir / "status.json"
    fresh = max(3 * config.status_interval_s, 5.0)  # a busy gateway may write late
    async with asyncio.timeout(timeout_s):
        if status_file.exists() and time.time() - status_file.stat().st_mtime < fresh:
            started = time.time()
            listening("through the running gateway")
            return await _code_from_status(status_file, driver.name, started)
        if isinstance(driver, MqttDevicesConfig):
            return await _code_from_bridges(config, driver, listening)
        return await _code_from_port(driver, listening)


async def _code_from_status(status_file: Path, driver: str, started: float) -> str:
    while True:
        await asyncio.sleep(POLL_S)
        code = await asyncio.to_thread(_heard_since, status_file, driver, started)
        if code is not None:
            return code


def _heard_since(status_file: Path, driver: str, since: float) -> str | None:
    """The code ``driver`` last heard (and did not know) after ``since``, per the status file."""
    try:
        heard: dict[str, float] = json.loads(status_file.read_text()).get("unknown_codes", {})
    except (OSError, ValueError):
        return None  # caught mid-write; the next poll reads it whole
    prefix = f"{driver}."
    fresh = [(at, key) for key, at in heard.items() if key.startswith(prefix) and at > since]
    return max(fresh)[1].removeprefix(prefix) if fresh else None


async def _code_from_port(driver: Rf433Config, listening: Callable[[str], None]) -> str:
    reader, writer = await open_serial(driver.port, driver.baudrate)
    listening(f"on {driver.port}")
    codes = CodeReader(driver.line_pattern, driver.burst_s)
    try:
        while True:
            pressed = codes.feed(await read_some(reader, driver.port), time.monotonic())
            if pressed:
                return pressed[0]
    finally:
        writer.close()


async def _code_from_bridges(
    config: GatewayConfig, driver: MqttDevicesConfig, listening: Callable[[str], None]
) -> str:
    """The next code an RF bridge of ``driver`` hears, read from its topics on the broker."""
    topics = _bridge_topics(driver)
    link = MqttLink(
        driver.broker or config.broker,
        client_id=f"lianfang-learn-{config.gateway.id}",
        persistent=False,
        subscribe=topics,
    )
    async with link:
        listening(f"on {', '.join(topics)}")
        while True:
            message, generation = await link.messages.get()
            link.taken(message)
            link.ack(message, generation)
            if message.retain:
                continue  # a press heard before we listened
            try:
                code = code_of(decode(message.payload), "/RfReceived/Data")
            except UnicodeDecodeError:
                continue
            if code is not None:
                return code


def _bridge_topics(driver: MqttDevicesConfig) -> list[str]:
    """The topics of ``driver``'s RF bridges, each once."""
    return list(dict.fromkeys(d.topic for d in driver.devices if d.preset == RF_BRIDGE))


def _learned(driver: LearningDriver) -> list[tuple[str, str, str]]:
    """Code, shop and device of each button ``driver`` already knows."""
    if isinstance(driver, Rf433Config):
        return [(b.code, b.shop_id, b.device_id) for b in driver.buttons]
    return [(d.code, d.shop_id, d.device_id) for d in driver.devices if d.code is not None]


def bind_code(
    path: Path, config: GatewayConfig, driver: LearningDriver, *, shop: str, device: str, code: str
) -> str:
    """Write ``code`` as ``shop``'s button ``device`` into the file at ``path``; say what was done.

    Adds the device to the shop (kind ``rf433_button``) if it is not listed yet.
    Raises ``ConfigError`` if the code is bound elsewhere or the result is invalid.
    """
    file = str(path)
    where = "buttons" if isinstance(driver, Rf433Config) else "devices"
    for known, known_shop, known_device in _learned(driver):
        if known == code:
            if (known_shop, known_device) == (shop, device):
                return f"code {code} is already {shop}/{device}; nothing to change"
            raise ConfigError(
                [
                    ConfigProblem(
                        file,
                        f"drivers.{driver.name}.{where}",
                        f"code {code} is already learned as {known_shop}/{known_device}",
                    )
                ]
            )
    if shop not in {s.id for s in config.shops}:
        raise ConfigError([ConfigProblem(file, "shops", f"no shop {shop!r} in this config")])
    yaml = YAML()  # round-trip: comments, order and quoting stay as the installer wrote them
    yaml.preserve_quotes = True
    data = yaml.load(path.read_text(encoding="utf-8"))
    shop_node = next(s for s in data["shops"] if s["id"] == shop)
    if "devices" not in shop_node:
        # Written out, the implicit default (panel-1) stays paired.
        current = next(s for s in config.shops if s.id == shop).devices
        shop_node["devices"] = CommentedSeq(
            CommentedMap([("id", d.id), ("kind", d.kind)]) for d in current
        )
    devices = shop_node["devices"]
    added = ""
    if device not in {d["id"] for d in devices}:
        devices.append(CommentedMap([("id", device), ("kind", "rf433_button")]))
        added = f"; added device {device} to shop {shop}"
    driver_node = next(d for d in data["drivers"] if d["name"] == driver.name)
    if isinstance(driver, Rf433Config):
        entry = CommentedMap([("code", code), ("shop_id", shop), ("device_id", device)])
    else:
        # On the driver's first bridge: with several, the installer moves it if need be.
        topic = _bridge_topics(driver)[0]
        fields = {"shop": shop, "device": device, "preset": RF_BRIDGE, "topic": topic, "code": code}
        entry = CommentedMap(fields.items())
    driver_node.setdefault(where, CommentedSeq()).append(entry)
    text = io.StringIO()
    yaml.dump(data, text)
    replace_checked(path, text.getvalue(), command="learn")
    return f"learned code {code} as {shop}/{device}{added}; old file kept as {path.name}.bak"
