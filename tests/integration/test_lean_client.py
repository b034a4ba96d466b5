"""The link's lean paho client against a real Mosquitto: it reads what paho reads, over TCP and TLS.

``gateway.mqtt.lean_client`` decodes the common PUBLISH and PUBACK itself and
reads its socket in chunks; every message the link takes, and every PUBACK's
verdict, must be what paho's own code makes of the same bytes.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.mqtt.client import BrokerConfig
from gateway.mqtt.lean_client import READ_CHUNK, LeanClient, lean_fits, link_client
from gateway.mqtt.link import MqttLink
from lab.broker import Mosquitto
from tests.clients import wait_until
from tests.relay import HoldingRelay, relay_tls

# (topic, payload, qos, retain, user property): the fast path's packets and paho's others.
MESSAGES: list[tuple[str, bytes, int, bool, tuple[str, str] | None]] = [
    ("lean/a", b'{"kind":"door_open"}', 1, False, None),
    ("lean/b", b"qos 0", 0, False, None),
    ("lean/c", b"", 1, False, None),
    ("lean/d", b"with a property", 1, False, ("origin", "panel")),
    ("lean/e", b"x" * (3 * READ_CHUNK + 17), 1, False, None),  # over several reads
    ("lean/\u5e97", "\u8b66\u62a5".encode(), 1, False, None),
    ("lean/r", b"retained", 1, True, None),
]
Fields = tuple[bytes, bytes, int, bool, bool, Any]


def _fields(message: paho.MQTTMessage) -> Fields:
    """What a reader sees of a message; paho's empty properties and the lean None alike."""
    props = message.properties
    shown = None if props is None or props.isEmpty() else props.json()
    topic: bytes = message._topic
    return (topic, bytes(message.payload), message.qos, message.retain, message.dup, shown)


def _publish_all(port: int) -> None:
    """Publish ``MESSAGES`` (the retained one first) with paho and wait for each verdict."""
    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        for topic, payload, qos, retain, user in sorted(MESSAGES, key=lambda m: not m[3]):
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            if user is not None:
                props.UserProperty = user
            client.publish(
                topic, payload, qos=qos, retain=retain, properties=props
            ).wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()


class _PahoReader:
    """paho's own Client and loop thread, subscribed to ``lean/#``: the reference."""

    def __init__(self, port: int) -> None:
        self.received: list[Fields] = []
        self.subscribed = threading.Event()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id="reference", protocol=MQTTProtocolVersion.MQTTv5
        )
        self.client.on_connect = lambda c, *_: c.subscribe("lean/#", qos=1)
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.client.on_message = lambda _c, _u, m: self.received.append(_fields(m))
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_the_installed_paho_is_one_the_lean_client_was_checked_against() -> None:
    """Else links run on paho's own Client: whole, but without the drain's savings."""
    assert lean_fits()
    assert isinstance(link_client("x"), LeanClient)
    assert not lean_fits("2.3.0")


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
def test_the_link_reads_every_field_paho_reads(
    tmp_path: Path, block_broker: Mosquitto, *, tls: bool
) -> None:
    """Through a relay that lets all the messages out in one write, the link takes what paho takes."""
    server, tls_config = relay_tls(tmp_path, tls=tls)
    reference = _PahoReader(block_broker.port)

    async def scenario() -> list[Fields]:
        taken: list[Fields] = []
        async with HoldingRelay(block_broker.port, tls=server) as relay:
            link = MqttLink(
                BrokerConfig(url=relay.url, tls=tls_config),
                client_id="lean",
                persistent=False,
                subscribe="lean/#",
            )
            async with link, asyncio.TaskGroup() as tg:
                watch = tg.create_task(link.watch(), name="watch")
                relay.held = True
                await asyncio.to_thread(reference.subscribed.wait, 5)
                await asyncio.to_thread(_publish_all, block_broker.port)
                await wait_until(lambda: relay.held_bytes > 3 * READ_CHUNK, 10, "all held")
                relay.release()
                while len(taken) < len(MESSAGES):
                    message, generation = await asyncio.wait_for(link.messages.get(), 10)
                    taken.append(_fields(message))
                    link.ack(message, generation)
                watch.cancel()
        return taken

    try:
        taken = asyncio.run(scenario())
    finally:
        reference.close()
    assert len(reference.received) == len(MESSAGES)
    assert taken == reference.received
    assert {t[0].decode() for t in taken} == {m[0] for m in MESSAGES}


def test_a_pubacks_verdict_is_what_paho_makes_of_it(block_broker: Mosquitto) -> None:
    """Success (Mosquitto's two-byte PUBACK) and 'no matching subscribers' (a reason code) alike."""
    verdicts: dict[str, list[tuple[int, bool]]] = {}
    for kind in (paho.Client, LeanClient):
        got: list[tuple[int, bool]] = []
        done = threading.Event()
        client = kind(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)

        def on_publish(
            *args: Any, got: list[tuple[int, bool]] = got, done: threading.Event = done
        ) -> None:
            reason = args[3]
            got.append((reason.value, reason.is_failure))
            if len(got) == 2:
                done.set()

        client.on_publish = on_publish
        client.on_connect = lambda c, *_: c.subscribe("heard/#", qos=1)
        subscribed = threading.Event()
        client.on_subscribe = lambda *_, s=subscribed: s.set()
        client.connect("127.0.0.1", block_broker.port)
        client.loop_start()
        try:
            assert subscribed.wait(5)
            client.publish("heard/x", b"1", qos=1)  # a subscriber (itself): success
            client.publish("unheard/x", b"1", qos=1)  # none: 0x10, still a success
            assert done.wait(5)
        finally:
            client.disconnect()
            client.loop_stop()
        verdicts[kind.__name__] = got
    assert verdicts["LeanClient"] == verdicts["Client"] == [(0, False), (16, False)]
