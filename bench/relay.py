"""The floor: a bare paho-mqtt subscribe -> republish relay, in its own process.

    python -m bench.relay --block mqtt://127.0.0.1:P1 --police mqtt://127.0.0.1:P2 \
        --neighbours table.json

It does what the gateway does on the wire and nothing else: it subscribes to
``lianfang/v1/shop/+/event`` on the block broker (QoS 1, persistent session,
receive maximum 1000, as the gateway's ingest does), republishes each panic or
duress message verbatim (QoS 1) to the ``notify`` topics of the origin shop's
neighbours on the block broker, and each message (with an ``id`` and
``shop_id`` added, so that a receiver can deduplicate) to the police broker
(QoS 1, 256 in flight, as the gateway's forwarder; never more than a broker's
Receive Maximum, which a stock Mosquitto sets at 20); it acknowledges a message
to the block broker only on the police broker's PUBACK (at-least-once with
backpressure, as the gateway acknowledges only what it has journalled). No
journal, no validation, no rules. One thread drives both connections with a
selector, so the relay pays no thread hand-offs, and its sockets have
TCP_NODELAY (paho leaves Nagle's algorithm on, which costs a burst of ten small
publishes ~10 ms on loopback; ``--nagle`` keeps it): the cheapest Python relay
we know how to write.

Readiness is told as systemd is told: ``READY=1`` on ``$NOTIFY_SOCKET`` once
both links are up and the subscription is acknowledged. SIGTERM stops it with a
clean DISCONNECT that keeps its session, so messages published while it is down
wait for it at the broker (the backlog benchmark).
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import signal
import socket
import sys
import time
from collections import deque
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

EVENT_TOPIC = "lianfang/v1/shop/+/event"
ALERT_KINDS = frozenset({"panic", "duress"})
SESSION_EXPIRY_S = 7 * 24 * 3600
RECEIVE_MAXIMUM = 1000  # as the gateway's mqtt_ingest default
BLOCK_INFLIGHT = 1000  # as the gateway's block publisher
POLICE_INFLIGHT = 256  # as the gateway's police forwarder window
CONNECT_TIMEOUT_S = 10.0


def host_port(url: str) -> tuple[str, int]:
    """Host and port of an ``mqtt://HOST:PORT`` URL."""
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 1883


def connect_properties(*, session_expiry_s: int, receive_maximum: int) -> Properties:
    """MQTT v5 CONNECT properties: session expiry and receive maximum."""
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = session_expiry_s
    props.ReceiveMaximum = receive_maximum
    return props


def new_client(client_id: str) -> mqtt.Client:
    """A paho 2 client (callback API v2, MQTT v5) that sends every publish at once.

    paho cannot change its in-flight window on a live connection, and the
    broker tells its Receive Maximum only in the CONNACK; so paho's window is
    off (set before connect, as paho requires) and ``Window`` keeps ours.
    """
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(0)
    client.max_queued_messages_set(0)
    return client


Upstream = tuple[int, int]
"""The block broker's (mid, qos) of a message still to acknowledge there."""


class Window:
    """One client's QoS 1 publishes: at most ``size`` await their PUBACK, the rest wait in order.

    ``size`` is 0 until the CONNACK, then the smaller of what we want and the
    broker's Receive Maximum: a client past it breaks the protocol (MQTT 5,
    4.9), and Mosquitto answers the excess with "quota exceeded" instead of
    taking it.
    """

    def __init__(self, client: mqtt.Client, wanted: int) -> None:
        """A window of at most ``wanted`` publishes for ``client``."""
        self.client = client
        self.wanted = wanted
        self.size = 0
        self.in_flight = 0
        self.waiting: deque[tuple[str, bytes, Upstream | None]] = deque()
        self.upstream: dict[int, Upstream] = {}

    def open(self, props: Properties | None) -> None:
        """The broker's CONNACK came: size the window by its Receive Maximum and send."""
        # Absent from the CONNACK means 65,535 (MQTT 5, 3.2.2.3.3).
        said = getattr(props, "ReceiveMaximum", 65_535)
        self.size = min(self.wanted, said)
        self._send()

    def publish(self, topic: str, payload: bytes, upstream: Upstream | None = None) -> None:
        """Send now if the window has room, else after the PUBACKs before it."""
        self.waiting.append((topic, payload, upstream))
        self._send()

    def acked(self, mid: int) -> Upstream | None:
        """A PUBACK came for ``mid``; the upstream message it settles, if any."""
        self.in_flight -= 1
        self._send()
        return self.upstream.pop(mid, None)

    def _send(self) -> None:
        while self.waiting and self.in_flight < self.size:
            topic, payload, upstream = self.waiting.popleft()
            info = self.client.publish(topic, payload, qos=1)
            self.in_flight += 1
            if upstream is not None:
                self.upstream[info.mid] = upstream


def notify_ready() -> None:
    """Send ``READY=1`` to ``$NOTIFY_SOCKET`` if there is one."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(address)
        sock.send(b"READY=1")


class Relay:
    """Two paho clients, one selector loop, one thread."""

    def __init__(
        self,
        *,
        block_url: str,
        police_url: str,
        neighbours: dict[str, list[str]],
        client_id: str,
        police_topic: str,
        nodelay: bool = True,
    ) -> None:
        """Relay from ``block_url`` to the neighbours' notify topics and to ``police_url``.

        ``nodelay`` sets TCP_NODELAY on both sockets (paho leaves Nagle's algorithm on).
        """
        self.nodelay = nodelay
        self.block_url = block_url
        self.police_url = police_url
        self.neighbours = neighbours
        self.police_topic = police_topic
        self.block = new_client(client_id)
        self.police = new_client(f"{client_id}-police")
        self.notify_window = Window(self.block, BLOCK_INFLIGHT)
        self.police_window = Window(self.police, POLICE_INFLIGHT)
        self.block.on_connect = self._block_connected
        self.block.on_subscribe = self._subscribed
        self.block.on_message = self._message
        self.block.on_publish = self._notice_acked
        self.police.on_connect = self._police_connected
        self.police.on_publish = self._police_acked
        # As the gateway does: a message is acknowledged upstream only once the
        # police broker has it, so the block broker holds the rest (backpressure).
        self.block.manual_ack_set(on=True)
        self.subscribed = False
        self.police_up = False
        self.relayed = 0
        self.refused = 0
        self.stopping = False

    def _block_connected(
        self,
        client: mqtt.Client,
        _userdata: object,
        _flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        props: Properties | None,
    ) -> None:
        if reason.is_failure:
            raise SystemExit(f"relay: block broker refused: {reason}")
        self.notify_window.open(props)
        client.subscribe(EVENT_TOPIC, qos=1)

    def _police_connected(
        self,
        _client: mqtt.Client,
        _userdata: object,
        _flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        props: Properties | None,
    ) -> None:
        if reason.is_failure:
            raise SystemExit(f"relay: police broker refused: {reason}")
        self.police_window.open(props)
        self.police_up = True

    def _subscribed(
        self,
        _client: mqtt.Client,
        _userdata: object,
        _mid: int,
        _reasons: list[ReasonCode],
        _props: Properties | None,
    ) -> None:
        self.subscribed = True

    def _message(self, _client: mqtt.Client, _userdata: object, msg: mqtt.MQTTMessage) -> None:
        shop = msg.topic.split("/")[3]
        payload = msg.payload
        body: dict[str, Any] = json.loads(payload)
        if body.get("kind") in ALERT_KINDS:
            for other in self.neighbours.get(shop, ()):
                self.notify_window.publish(f"lianfang/v1/shop/{other}/notify", payload)
        body["id"] = f"{shop}/{body.get('device_id')}/{body.get('seq')}"
        body["shop_id"] = shop
        self.police_window.publish(
            self.police_topic,
            json.dumps(body, separators=(",", ":")).encode(),
            upstream=(msg.mid, msg.qos),
        )
        self.relayed += 1

    def _notice_acked(
        self,
        _client: mqtt.Client,
        _userdata: object,
        mid: int,
        reason: ReasonCode,
        _props: Properties | None,
    ) -> None:
        self.refused += reason.is_failure
        self.notify_window.acked(mid)

    def _police_acked(
        self,
        _client: mqtt.Client,
        _userdata: object,
        mid: int,
        reason: ReasonCode,
        _props: Properties | None,
    ) -> None:
        """The police broker has the message: now acknowledge it to the block broker."""
        incoming = self.police_window.acked(mid)
        if reason.is_failure:
            # Not acknowledged upstream: the block broker keeps it for the next session.
            self.refused += 1
        elif incoming is not None:
            self.block.ack(*incoming)

    def _connect(self) -> None:
        for client, url in ((self.police, self.police_url), (self.block, self.block_url)):
            host, port = host_port(url)
            client.connect(
                host,
                port,
                keepalive=30,
                clean_start=False,
                properties=connect_properties(
                    session_expiry_s=SESSION_EXPIRY_S, receive_maximum=RECEIVE_MAXIMUM
                ),
            )
            sock = client.socket()
            if self.nodelay and isinstance(sock, socket.socket):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _turn(self, selector: selectors.BaseSelector) -> bool:
        """One pass of the event loop; False when a link is lost."""
        for client in (self.block, self.police):
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if client.want_write() else 0)
            selector.modify(client.socket(), events, client)  # type: ignore[arg-type]
        for key, mask in selector.select(timeout=0.2):
            client = key.data
            if mask & selectors.EVENT_READ and client.loop_read() != mqtt.MQTT_ERR_SUCCESS:
                return False
            if mask & selectors.EVENT_WRITE:
                client.loop_write()
        return True

    def run(self) -> int:
        """Connect both links, relay until SIGTERM; the process exit code."""
        self._connect()
        clients = (self.block, self.police)
        selector = selectors.DefaultSelector()
        for client in clients:
            selector.register(client.socket(), selectors.EVENT_READ, client)  # type: ignore[arg-type]
        ready_told = False
        started = last_misc = time.monotonic()
        while not self.stopping:
            if not self._turn(selector):
                print("relay: a link was lost", file=sys.stderr)
                return 1
            now = time.monotonic()
            if now - last_misc > 1.0:
                last_misc = now
                for client in clients:
                    client.loop_misc()
            if not ready_told and self.subscribed and self.police_up:
                notify_ready()
                ready_told = True
            if not ready_told and now - started > CONNECT_TIMEOUT_S:
                print("relay: links not up in time", file=sys.stderr)
                return 1
        for client in clients:
            client.disconnect()  # clean DISCONNECT: the session stays (expiry set at CONNECT)
            client.loop_write()
        print(f"relay: relayed {self.relayed} messages", file=sys.stderr)
        if self.refused:
            print(f"relay: WARNING: brokers refused {self.refused} publishes", file=sys.stderr)
        return 0


def main() -> None:
    """Command line of the relay."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--block", required=True, help="block broker URL")
    ap.add_argument("--police", required=True, help="police broker URL")
    ap.add_argument("--neighbours", required=True, type=Path, help="JSON {shop: [neighbour ids]}")
    ap.add_argument("--client-id", default="bench-relay", help="client id on the block broker")
    ap.add_argument("--police-topic", default="police/v1/L1/RELAY/events", help="police topic")
    ap.add_argument("--nagle", action="store_true", help="leave Nagle's algorithm on (no NODELAY)")
    ap.add_argument("--username", help="user name on the block broker (bench/auth.py)")
    ap.add_argument("--password-file", type=Path, help="file holding that user's password")
    args = ap.parse_args()
    relay = Relay(
        block_url=args.block,
        police_url=args.police,
        neighbours=json.loads(args.neighbours.read_text()),
        client_id=args.client_id,
        police_topic=args.police_topic,
        nodelay=not args.nagle,
    )
    if args.username:
        password = args.password_file.read_text().strip() if args.password_file else None
        relay.block.username_pw_set(args.username, password)

    def stop(_signum: int, _frame: FrameType | None) -> None:
        relay.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    sys.exit(relay.run())


if __name__ == "__main__":
    main()
