"""Forwarding to a police broker over TLS with client certificates; failing closed when TLS cannot be had."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from firmware_stubs.police_platform import PolicePlatform
from gateway.journal_reader import JournalReader
from gateway.mqtt.client import BrokerConfig, TlsConfig
from lab.broker import BrokerTls, Mosquitto
from tests.certs import Pki, make_pki
from tests.clients import running, wait_until
from tests.harness import TestGateway, init_config


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


@pytest.fixture
def tls_police(tmp_path: Path, pki: Pki):
    tls = BrokerTls(ca_file=pki.ca, cert_file=pki.server_cert, key_file=pki.server_key)
    with Mosquitto(workdir=tmp_path / "tls-broker", tls=tls) as broker:
        yield broker


def platform_for(broker: Mosquitto, pki: Pki) -> PolicePlatform:
    tls = TlsConfig(ca_file=pki.ca, cert_file=pki.client_cert, key_file=pki.client_key)
    return PolicePlatform(BrokerConfig(url=broker.url, tls=tls), client_id="tls-platform")


def tls_config(tmp_path: Path, block: Mosquitto, police: Mosquitto, ca: Path, pki: Pki) -> Path:
    return init_config(
        tmp_path / "gw",
        block_url=block.url,
        police_url=None,
        forwarders=[
            {
                "kind": "police_mqtt",
                "name": "police",
                "broker": {
                    "url": police.url,
                    "tls": {
                        "ca_file": str(ca),
                        "cert_file": str(pki.client_cert),
                        "key_file": str(pki.client_key),
                    },
                },
            }
        ],
    )


def start_tls_gateway(
    tmp_path, block_broker, tls_police, ca: Path, *, pki: Pki, procs
) -> TestGateway:
    gw = TestGateway(tls_config(tmp_path, block_broker, tls_police, ca, pki))
    procs.append(gw)
    gw.start()
    return gw


def press_panic(
    platform: PolicePlatform, block_url: str, until, what: str, *, linger_s: float = 0.0
) -> None:
    """Run the platform, press panic at S00020, wait until ``until()``, listen ``linger_s`` more."""

    async def scenario() -> None:
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(platform.run(), name="platform")
            await asyncio.wait_for(platform.ready.wait(), 10)
            async with running(block_url=block_url, shops=["S00020"]) as (panels, _):
                await panels["S00020"].send("panic")
                await wait_until(until, 10, what)
                await asyncio.sleep(linger_s)
            task.cancel()

    asyncio.run(scenario())


def test_events_reach_the_police_over_tls_with_a_client_certificate(
    tmp_path, block_broker, tls_police, pki, gateway_process
):
    """With the right CA and a client certificate the panic arrives over mqtts://."""
    start_tls_gateway(tmp_path, block_broker, tls_police, pki.ca, pki=pki, procs=gateway_process)
    platform = platform_for(tls_police, pki)
    press_panic(platform, block_broker.url, lambda: platform.by_id, "the panic over TLS")
    assert platform.unique[0].body["shop_id"] == "S00020"


def test_a_broker_certificate_from_another_ca_is_refused_and_nothing_falls_back_to_plain_text(
    tmp_path, block_broker, tls_police, pki, gateway_process
):
    """A wrong CA means no delivery at all, a logged link fault, and the event kept for later."""
    other = make_pki(tmp_path / "other-pki", ca_name="Somebody Else CA")
    gw = start_tls_gateway(
        tmp_path, block_broker, tls_police, other.ca, pki=pki, procs=gateway_process
    )
    platform = platform_for(tls_police, pki)
    press_panic(
        platform,
        block_broker.url,
        lambda: "forwarder[police] down" in gw.log_text(),
        "the link fault",
        linger_s=1.0,  # room for any plain-text fallback to show up at the platform
    )
    assert platform.deliveries == []
    assert "certificate verify failed" in gw.log_text().lower()
    pending = JournalReader(gw.config.parent / "state" / "journal.sqlite3").pending(
        "police", after=0, limit=10
    )
    # Alarms first: the panic is pending ahead of the earlier link fault (a trouble).
    assert [r.event.kind.value for r in pending][:2] == ["panic", "device_fault"]
