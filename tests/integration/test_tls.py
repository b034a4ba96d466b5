"""Forwarding to a police broker over TLS with client certificates; failing closed when TLS cannot be had.

Each failure case puts a relay on the port the gateway is given. The relay
sends a TLS handshake to the police broker under test and anything else (a
plain-text MQTT CONNECT) to a plain broker that would accept it, and records
every byte the gateway sends: a fallback to plain text would be delivered
there, and seen. Once the case has been shown, the relay turns to a broker the
gateway can trust and the link comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from firmware_stubs.mqtt_client import client_for
from firmware_stubs.police_platform import PolicePlatform
from gateway.journal_reader import JournalReader
from gateway.mqtt.client import BrokerConfig, TlsConfig
from lab.broker import BrokerTls, Mosquitto, free_port
from tests.certs import Pki, make_pki, server_certificate
from tests.clients import running, wait_until
from tests.harness import TestGateway, init_config

TLS_HANDSHAKE = 0x16
"""First byte of a TLS record carrying a handshake (the ClientHello); plain MQTT starts 0x10."""

POLICE_LINK = "link:forwarder[police]"
"""Device id of the trouble events the gateway raises about its police link."""


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


@pytest.fixture
def tls_police(tmp_path: Path, pki: Pki) -> Iterator[Mosquitto]:
    tls = BrokerTls(ca_file=pki.ca, cert_file=pki.server_cert, key_file=pki.server_key)
    with Mosquitto(workdir=tmp_path / "tls-broker", tls=tls) as broker:
        yield broker


@pytest.fixture
def plain_police(tmp_path: Path) -> Iterator[Mosquitto]:
    """A broker that takes plain text: where a fallback would deliver."""
    with Mosquitto(workdir=tmp_path / "plain-broker") as broker:
        yield broker


class SniffingRelay:
    """A loopback port that routes each connection by its first byte and records what came in.

    A TLS handshake goes on to ``tls_port`` (changeable while running); any
    other first byte goes on to ``plain_port``.
    """

    def __init__(self, *, tls_port: int, plain_port: int) -> None:
        self.port = free_port()
        self.tls_port = tls_port
        self.plain_port = plain_port
        self.received: list[bytearray] = []
        """Per connection, every byte the client sent."""
        self._writers: set[asyncio.StreamWriter] = set()
        self._connections: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"mqtts://127.0.0.1:{self.port}"

    def in_clear(self) -> list[bytes]:
        """Connections that did not open with a TLS handshake, or that carried MQTT in clear."""
        return [
            bytes(got)
            for got in self.received
            if got and (got[0] != TLS_HANDSHAKE or b"MQTT" in got or b"S00020" in got)
        ]

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[SniffingRelay]:
        server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
        try:
            yield self
        finally:
            server.close()
            for writer in list(self._writers):
                writer.close()
            # Closed sockets end every relayed connection; wait for their handlers to finish.
            await asyncio.wait_for(asyncio.gather(*self._connections), 5)
            await server.wait_closed()

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        this = asyncio.current_task()
        assert this is not None
        self._connections.add(this)
        got = bytearray()
        self.received.append(got)
        writers = [client_w]
        self._writers.add(client_w)
        try:
            first = await client_r.read(1)
            if not first:
                return
            got += first
            port = self.tls_port if first[0] == TLS_HANDSHAKE else self.plain_port
            upstream_r, upstream_w = await asyncio.open_connection("127.0.0.1", port)
            writers.append(upstream_w)
            self._writers.add(upstream_w)
            upstream_w.write(first)
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._pipe(client_r, upstream_w, got), name="relay-up")
                tg.create_task(self._pipe(upstream_r, client_w, bytearray()), name="relay-down")
        except OSError:
            pass  # the broker refused or dropped us: the client sees its connection end
        finally:
            for writer in writers:
                writer.close()
                self._writers.discard(writer)
            self._connections.discard(this)

    @staticmethod
    async def _pipe(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, record: bytearray
    ) -> None:
        try:
            while data := await reader.read(65536):
                record += data
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()  # one side gone: end the other too


def platform_for(broker: Mosquitto, pki: Pki) -> PolicePlatform:
    tls = TlsConfig(ca_file=pki.ca, cert_file=pki.client_cert, key_file=pki.client_key)
    return PolicePlatform(BrokerConfig(url=broker.url, tls=tls), client_id="tls-platform")


def tls_config(
    tmp_path: Path, block: Mosquitto, police_url: str, ca: Path, client: Pki | None
) -> Path:
    """A gateway forwarding to ``police_url`` trusting ``ca``, with ``client``'s certificate if given."""
    tls = {"ca_file": str(ca)}
    if client is not None:
        tls |= {"cert_file": str(client.client_cert), "key_file": str(client.client_key)}
    return init_config(
        tmp_path / "gw",
        block_url=block.url,
        police_url=None,
        forwarders=[
            {"kind": "police_mqtt", "name": "police", "broker": {"url": police_url, "tls": tls}}
        ],
    )


def pending_kinds(gw: TestGateway) -> list[str]:
    path = gw.config.parent / "state" / "journal.sqlite3"
    return [r.event.kind.value for r in JournalReader(path).pending("police", after=0, limit=10)]


async def press_panic(block_url: str) -> None:
    async with running(block_url=block_url, shops=["S00020"]) as (panels, _):
        await panels["S00020"].send("panic")


def test_events_reach_the_police_over_tls_with_a_client_certificate(
    tmp_path, block_broker, tls_police, pki, gateway_process
):
    """With the right CA and a client certificate the panic arrives over mqtts://."""
    gw = TestGateway(tls_config(tmp_path, block_broker, tls_police.url, pki.ca, pki))
    gateway_process.append(gw)
    gw.start()
    platform = platform_for(tls_police, pki)

    async def scenario() -> None:
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(platform.run(), name="platform")
            await asyncio.wait_for(platform.ready.wait(), 10)
            await press_panic(block_broker.url)
            await wait_until(lambda: platform.by_id, 10, "the panic over TLS")
            task.cancel()

    asyncio.run(scenario())
    assert platform.unique[0].body["shop_id"] == "S00020"


def _other_ca(tmp_path: Path, pki: Pki) -> BrokerTls:
    other = make_pki(tmp_path / "other-pki", ca_name="Somebody Else CA")
    return BrokerTls(ca_file=pki.ca, cert_file=other.server_cert, key_file=other.server_key)


def _wrong_host(tmp_path: Path, pki: Pki) -> BrokerTls:
    cert, key = tmp_path / "elsewhere.pem", tmp_path / "elsewhere.key"
    server_certificate(pki, cert, key, names=("police.example",))
    return BrokerTls(ca_file=pki.ca, cert_file=cert, key_file=key)


def _expired(tmp_path: Path, pki: Pki) -> BrokerTls:
    cert, key = tmp_path / "expired.pem", tmp_path / "expired.key"
    server_certificate(pki, cert, key, expired=True)
    return BrokerTls(ca_file=pki.ca, cert_file=cert, key_file=key)


def _wants_client_cert(tmp_path: Path, pki: Pki) -> BrokerTls:
    return BrokerTls(ca_file=pki.ca, cert_file=pki.server_cert, key_file=pki.server_key)


# case: (the TLS of the broker the gateway meets, whether the gateway has a client
# certificate, the reason the gateway's log or the broker's gives)
FAILURES: dict[str, tuple[Callable[[Path, Pki], BrokerTls], bool, str]] = {
    "a CA that does not sign the broker": (_other_ca, True, "certificate verify failed"),
    "a broker certificate for another host": (_wrong_host, True, "mismatch"),
    "an expired broker certificate": (_expired, True, "certificate has expired"),
    "a broker that wants a client certificate the gateway lacks": (
        _wants_client_cert,
        False,
        "peer did not return a certificate",
    ),
}


@pytest.mark.parametrize("case", list(FAILURES))
def test_tls_fails_closed_keeps_the_panic_and_forwards_the_link_fault_once_trusted(  # noqa: PLR0917 - fixtures
    case, tmp_path, block_broker, plain_police, pki, gateway_process
):
    """Nothing in clear, nothing delivered, the panic journalled; on a good broker both arrive once."""
    broker_tls, with_client_cert, reason = FAILURES[case]
    untrusted = Mosquitto(workdir=tmp_path / "untrusted", tls=broker_tls(tmp_path, pki))
    # The broker the link comes back to; without a client certificate it must not ask for one.
    good_tls = BrokerTls(
        ca_file=pki.ca,
        cert_file=pki.server_cert,
        key_file=pki.server_key,
        require_client_cert=with_client_cert,
    )
    trusted = Mosquitto(workdir=tmp_path / "trusted", tls=good_tls)
    with untrusted, trusted:
        relay = SniffingRelay(tls_port=untrusted.port, plain_port=plain_police.port)
        gw = TestGateway(
            tls_config(tmp_path, block_broker, relay.url, pki.ca, pki if with_client_cert else None)
        )
        gateway_process.append(gw)
        platform = platform_for(trusted, pki)
        plain_topics: list[str] = []

        async def listen_in_clear() -> None:
            async with client_for(
                BrokerConfig(url=plain_police.url), client_id="plain-spy", persistent=False
            ) as spy:
                await spy.subscribe("#", qos=1)
                async for message in spy.messages:
                    plain_topics.append(str(message.topic))  # noqa: PERF401 - as each arrives

        async def scenario() -> None:
            async with relay.serving(), asyncio.TaskGroup() as tg:
                listening = [
                    tg.create_task(platform.run(), name="platform"),
                    tg.create_task(listen_in_clear(), name="plain-spy"),
                ]
                await asyncio.wait_for(platform.ready.wait(), 10)
                await asyncio.to_thread(gw.start)
                await press_panic(block_broker.url)
                await wait_until(
                    lambda: (
                        relay.in_clear()  # a fallback: stop waiting, the assert below names it
                        or (
                            "forwarder[police] down" in gw.log_text()
                            and "panic" in pending_kinds(gw)
                        )
                    ),
                    10,
                    "the link fault logged and the panic journalled",
                )
                # The gateway has tried the untrusted broker at least once, over TLS only.
                assert relay.received
                assert relay.in_clear() == []
                assert platform.deliveries == []
                said = gw.log_text() + (untrusted.workdir / "mosquitto.log").read_text()
                assert reason in said.lower()
                # Alarms first: the panic waits ahead of the earlier link fault (a trouble).
                assert pending_kinds(gw)[:2] == ["panic", "device_fault"]

                relay.tls_port = trusted.port
                await wait_until(
                    lambda: (
                        {"panic", "device_fault", "restore"}
                        <= {d.body["kind"] for d in platform.unique}
                    ),
                    20,
                    "the panic, the link fault and its restore on the trusted broker",
                )
                await wait_until(lambda: pending_kinds(gw) == [], 10, "every delivery acked")
                for task in listening:
                    task.cancel()

        asyncio.run(scenario())
    assert relay.in_clear() == []
    assert plain_topics == []
    unique = platform.unique
    assert [d.body["kind"] for d in unique if d.body.get("shop_id") == "S00020"] == ["panic"]
    link_news = [(d.body["kind"], d.body["device_id"]) for d in unique if not d.body.get("shop_id")]
    assert sorted(link_news) == [("device_fault", POLICE_LINK), ("restore", POLICE_LINK)]
