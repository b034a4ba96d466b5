"""``lianfang check --online``: reach every broker the config names and say what each announced.

An installer learns here, before a panic is pressed, whether each broker is
reachable, which protocol it speaks, the limits its CONNACK announced, and what
to change where a broker cannot carry alarms (MQTT 3.1.1 only, QoS 0 only),
and whether the block broker lets in clients with no login.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass

from gateway.config.model import GatewayConfig
from gateway.errors import ConfigProblem
from gateway.mqtt.client import BrokerConfig
from gateway.mqtt.limits import BrokerLimits, BrokerUnsuitable, LinkDown
from gateway.mqtt.link import MqttLink

ONLINE_TIMEOUT_S = 3.0
BIG_EVENT_BYTES = 16_384
"""An event with every attribute filled can reach this size upstream."""
ANONYMOUS_WARNING = (
    "accepts clients with no login: anyone on the block's network can raise a panic for any "
    "shop or send neighbour notices (run `lianfang broker-config`; README: Securing the block "
    "broker)"
)


@dataclass(frozen=True)
class BrokerReport:
    """What ``lianfang check --online`` learned of one broker the config names."""

    path: str
    """Where the broker is set: ``broker`` or ``forwarders[0].broker``."""
    url: str
    limits: BrokerLimits | None
    """What the broker announced in its CONNACK; None if it was not reached."""
    problems: tuple[ConfigProblem, ...] = ()
    warnings: tuple[str, ...] = ()
    latency_ms: float | None = None
    """From connecting to the CONNACK, when reached (the commissioning report shows it)."""

    def describe(self) -> str:
        """One line: reached (protocol and limits) or not, then any warnings."""
        if self.limits is None:
            said = "not reached" if not self.problems else f"not usable: {self.problems[0].message}"
        else:
            said = f"reached, MQTT 5.0; {self.limits.describe()}"
            if self.problems:
                said += f"; not usable: {self.problems[0].message}"
        notes = "".join(f"\n  warning: {w}" for w in self.warnings)
        return f"{self.path} ({self.url}): {said}{notes}"


def check_online(
    config: GatewayConfig, *, file: str = "", timeout_s: float = ONLINE_TIMEOUT_S
) -> list[ConfigProblem]:
    """Every problem ``reach_brokers`` found, at the setting to fix."""
    reports = reach_brokers(config, file=file, timeout_s=timeout_s)
    return [problem for report in reports for problem in report.problems]


def reach_brokers(
    config: GatewayConfig, *, file: str = "", timeout_s: float = ONLINE_TIMEOUT_S
) -> list[BrokerReport]:
    """Try a real MQTT CONNECT to the block broker and every forwarder's and driver's broker.

    Reports, per broker, whether it was reached, the limits its CONNACK
    announced, and each problem: unreachable, refused, TLS files unusable, or a
    broker that cannot carry alarms (MQTT 3.1.1 only, QoS 0 only) with what to
    change. Its path names the setting to fix (``forwarders[0].broker.url``, or
    ``...broker.tls`` when the certificate files cannot be loaded). Brokers are
    tried at once, each for ``timeout_s``; a host that drops packets may take
    paho's own 5 s connect timeout. The connection uses a client id of its own
    and a clean session, so a running gateway is not disturbed. Runs its own
    event loop: call it from synchronous code.
    """
    targets = [("broker", config.broker)] + [
        (f"forwarders[{i}].broker", broker)
        for i, forwarder in enumerate(config.forwarders)
        if isinstance(broker := getattr(forwarder, "broker", None), BrokerConfig)
    ]
    targets += [
        (f"drivers[{i}].broker", broker)
        for i, driver in enumerate(config.drivers)
        if isinstance(broker := getattr(driver, "broker", None), BrokerConfig)
    ]
    client_id = f"lianfang-{config.gateway.id}-check-{os.getpid()}"

    async def try_all() -> list[BrokerReport]:
        return await asyncio.gather(
            *(
                _try_connect(broker, f"{client_id}-{i}", timeout_s, file=file, path=path)
                for i, (path, broker) in enumerate(targets)
            )
        )

    return asyncio.run(try_all())


async def _try_connect(
    broker: BrokerConfig, client_id: str, timeout_s: float, *, file: str, path: str
) -> BrokerReport:
    """Connect once with a clean session; what the broker said, or what went wrong."""
    try:
        link = MqttLink(broker, client_id=client_id, persistent=False)
    except OSError as exc:
        problem = _tls_problem(broker, exc, file=file, path=f"{path}.tls")
        return BrokerReport(path, broker.url, None, (problem,))
    started = time.monotonic()
    try:
        async with asyncio.timeout(timeout_s), link:
            limits = link.limits
            latency_ms = (time.monotonic() - started) * 1000
    except TimeoutError:
        message = f"no answer from {broker.url} within {timeout_s:g} s"
    except BrokerUnsuitable as exc:
        return BrokerReport(
            path, broker.url, link.limits, (ConfigProblem(file, f"{path}.url", str(exc)),)
        )
    except LinkDown as exc:
        message = f"cannot connect to {broker.url}: {exc}"
    else:
        warnings = _limit_warnings(limits)
        # Only the block broker: its shops' topics are what a stranger would forge.
        if path == "broker" and await _accepts_anonymous(broker, f"{client_id}-anon", timeout_s):
            warnings += (ANONYMOUS_WARNING,)
        return BrokerReport(path, broker.url, limits, warnings=warnings, latency_ms=latency_ms)
    return BrokerReport(path, broker.url, None, (ConfigProblem(file, f"{path}.url", message),))


async def _accepts_anonymous(broker: BrokerConfig, client_id: str, timeout_s: float) -> bool:
    """Whether ``broker`` lets a client in with no user name or password."""
    anonymous = broker.model_copy(
        update={"username": None, "password": None, "password_file": None}
    )
    try:
        async with (
            asyncio.timeout(timeout_s),
            MqttLink(anonymous, client_id=client_id, persistent=False),
        ):
            return True
    except (TimeoutError, LinkDown, BrokerUnsuitable):
        return False


def _limit_warnings(limits: BrokerLimits) -> tuple[str, ...]:
    """Limits the gateway honours but an installer should know of, with what to change."""
    warnings = []
    if not limits.retain_available:
        warnings.append(
            "no retained messages: the gateway's status is published unretained, so a "
            "client sees it only at the next refresh (Mosquitto: retain_available true)"
        )
    if limits.maximum_packet_size is not None and limits.maximum_packet_size < BIG_EVENT_BYTES:
        warnings.append(
            f"maximum packet size {limits.maximum_packet_size} bytes: an event larger than "
            "that is given up for this broker (Mosquitto: raise or remove max_packet_size)"
        )
    return tuple(warnings)


def _tls_problem(broker: BrokerConfig, exc: OSError, *, file: str, path: str) -> ConfigProblem:
    """Name the certificate file that is missing, or say why the files could not be used."""
    tls = broker.tls
    for setting in ("ca_file", "cert_file", "key_file"):
        named = getattr(tls, setting, None)
        if named is not None and not named.is_file():
            return ConfigProblem(file, f"{path}.{setting}", f"no such file: {named}")
    return ConfigProblem(file, path, f"cannot load the TLS files: {exc}")
