"""Shared fixtures: real Mosquitto brokers on free loopback ports, stopped by PID.

The brokers run in Mosquitto's stock configuration (a listener only), as an
installer's broker does; a test that needs the tuned broker (deep queues for a
backlog bigger than the stock 1,000 messages) says so with
``@pytest.mark.tuned_broker`` and a reason.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lab.broker import Mosquitto, mosquitto_binary
from tests.chromium import Chromium
from tests.field import bind_field_devices
from tests.harness import TestGateway, init_config


@pytest.fixture(scope="session", autouse=True)
def _mosquitto_installed() -> None:
    """Fail loudly, never skip, when the broker binary is missing: a skipped broker test hides a broken install."""
    mosquitto_binary()


def _tuned(request: pytest.FixtureRequest) -> bool:
    return request.node.get_closest_marker("tuned_broker") is not None


@pytest.fixture
def block_broker(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Mosquitto]:
    """The block's broker, fresh for each test so persistent sessions never leak between tests."""
    with Mosquitto(workdir=tmp_path / "block-broker-dir", tuned=_tuned(request)) as broker:
        yield broker


@pytest.fixture
def police_broker(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Mosquitto]:
    """The police platform's broker; persistent so that its sessions survive a restart."""
    with Mosquitto(
        workdir=tmp_path / "police-broker-dir", persistent=True, tuned=_tuned(request)
    ) as broker:
        yield broker


@pytest.fixture
def gateway_process() -> Iterator[list[TestGateway]]:
    """Gateways a test starts; any still running at the end are killed by PID."""
    started: list[TestGateway] = []
    yield started
    for gw in started:
        gw.kill()


@pytest.fixture
def start_gateway(
    tmp_path: Path,
    block_broker: Mosquitto,
    police_broker: Mosquitto,
    gateway_process: list[TestGateway],
) -> Callable[..., TestGateway]:
    """Start `lianfang run` on a config from `lianfang init` (Changping Road), with overrides."""

    def start(**overrides: object) -> TestGateway:
        config = init_config(
            tmp_path, block_url=block_broker.url, police_url=police_broker.url, **overrides
        )
        gw = TestGateway(config)
        gateway_process.append(gw)
        gw.start()
        return gw

    return start


@pytest.fixture
def start_field_gateway(
    tmp_path: Path,
    block_broker: Mosquitto,
    police_broker: Mosquitto,
    gateway_process: list[TestGateway],
) -> Callable[..., TestGateway]:
    """Start `lianfang run` with field devices bound on extra drivers (see tests/field.py)."""

    def start(
        devices: dict[str, list[tuple[str, str]]],
        drivers: list[dict[str, object]],
        **overrides: object,
    ) -> TestGateway:
        config = init_config(
            tmp_path, block_url=block_broker.url, police_url=police_broker.url, **overrides
        )
        bind_field_devices(config, devices, drivers)
        gw = TestGateway(config)
        gateway_process.append(gw)
        gw.start()
        return gw

    return start


@pytest.fixture
def chromium(tmp_path: Path) -> Iterator[Chromium]:
    """Headless Chromium on the DevTools pipe, stopped by PID at the end."""
    browser = Chromium(tmp_path / "chromium-profile")
    yield browser
    browser.close()
