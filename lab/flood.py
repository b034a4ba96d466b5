"""Paced QoS 1 publishing from one MQTT client, bounded: the loads of the benches and fault tests.

``RatePublisher`` publishes ``count`` messages at ``rate`` a second, pacing
itself in 10 ms slices and keeping at most ``window`` publishes awaiting their
PUBACK, so the publishing client is never what holds a load back. ``junk``
is the flood fault's load: in turn, bytes that are not JSON on one shop's
event topic, well-formed door events from that shop (far beyond any sane
rate), events of a device the shop does not have, and events on the topic of
a shop no gateway serves. ``door_events`` is the sustained-rate load.

    python -m lab.flood --url mqtt://127.0.0.1:PORT --shop S00080 --rate 5000 --count 30000
    python -m lab.flood --url mqtt://127.0.0.1:PORT --doors S00001,S00002 --rate 250 --count 60000

runs one flood (junk from ``--shop``, or doors opening and closing at
``--doors``) in its own process, so that a benchmark's clocks are not held up
by the flood's publishing, and prints its figures as JSON when done or on
SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import FrameType
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

SLICE_S = 0.01
JUNK_KINDS = ("malformed", "routine", "unknown_device", "unknown_shop")


Body = Callable[[int], tuple[str, bytes]]  # message number -> (topic, payload)


def junk(shop_id: str) -> Body:
    """The flood fault's messages, from ``shop_id``'s client."""
    own = f"lianfang/v1/shop/{shop_id}/event"

    def body(i: int) -> tuple[str, bytes]:
        kind = JUNK_KINDS[i % len(JUNK_KINDS)]
        if kind == "malformed":
            return own, b"\x00\xff not json " + str(i).encode()
        device = "no-such-device" if kind == "unknown_device" else "panel-1"
        payload = door_event(device, i)
        if kind == "unknown_shop":
            return "lianfang/v1/shop/NO-SUCH-SHOP/event", payload
        return own, payload

    return body


def door_events(
    shops: Sequence[str], seq_base: int = 0, kinds: Sequence[str] = ("door_open",)
) -> Body:
    """Well-formed door events from ``shops`` in turn, each with its own sequence number.

    Each shop's events go through ``kinds`` in turn: ``("door_open",
    "door_close")`` is a door that really opens and closes.
    """

    def body(i: int) -> tuple[str, bytes]:
        shop, turn = shops[i % len(shops)], i // len(shops)
        return f"lianfang/v1/shop/{shop}/event", door_event(
            "panel-1", seq_base + i, kinds[turn % len(kinds)]
        )

    return body


def door_event(device: str, seq: int, kind: str = "door_open") -> bytes:
    """A door event of ``device`` as a panel sends it."""
    ts = datetime.now(UTC).isoformat()
    return f'{{"device_id":"{device}","kind":"{kind}","seq":{seq},"ts":"{ts}"}}'.encode()


@dataclass
class RatePublisher:
    """``count`` messages made by ``body`` at ``rate`` a second from one client."""

    url: str
    client_id: str
    rate: int
    count: int
    body: Body
    window: int = 1000
    published: int = 0
    acked: int = 0
    started_at: float | None = None
    ended_at: float | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> RatePublisher:
        """Connect and begin publishing in a thread of its own."""
        self._thread = threading.Thread(target=self._run, name=self.client_id, daemon=True)
        self._thread.start()
        return self

    def join(self, timeout_s: float) -> None:
        """Wait for the end (every message published and acknowledged)."""
        if self._thread is not None:
            self._thread.join(timeout_s)

    def stop(self) -> None:
        """End early."""
        self._stop.set()
        self.join(10)

    def _run(self) -> None:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv5
        )
        client.max_inflight_messages_set(self.window)
        client.max_queued_messages_set(0)
        connected = threading.Event()
        window = threading.BoundedSemaphore(self.window)

        def on_publish(*_: object) -> None:
            self.acked += 1
            window.release()

        client.on_connect = lambda *_: connected.set()
        client.on_publish = on_publish
        where = urlsplit(self.url)
        client.connect(where.hostname or "127.0.0.1", where.port or 1883, keepalive=30)
        client.loop_start()
        try:
            if not connected.wait(10):
                raise RuntimeError(f"{self.client_id} could not connect to {self.url}")
            self.started_at = time.monotonic()
            per_slice = max(1, round(self.rate * SLICE_S))
            while self.published < self.count and not self._stop.is_set():
                due = self.started_at + self.published / self.rate
                if (wait := due - time.monotonic()) > 0:
                    time.sleep(wait)  # pacing the load, not synchronising with it
                for _ in range(min(per_slice, self.count - self.published)):
                    if not window.acquire(timeout=30):
                        return
                    topic, payload = self.body(self.published)
                    client.publish(topic, payload, qos=1)
                    self.published += 1
            deadline = time.monotonic() + 30
            while self.acked < self.published and time.monotonic() < deadline:
                time.sleep(SLICE_S)
            self.ended_at = time.monotonic()
        finally:
            client.disconnect()
            client.loop_stop()

    @property
    def achieved_rate(self) -> float:
        """Messages a second actually published (0 before the end)."""
        if self.started_at is None or self.ended_at is None:
            return 0.0
        return self.published / max(self.ended_at - self.started_at, 1e-9)

    def figures(self) -> dict[str, float]:
        """Published, acknowledged, the rate achieved and the seconds it took."""
        seconds = (self.ended_at or 0.0) - (self.started_at or 0.0)
        return {
            "published": self.published,
            "acked": self.acked,
            "rate": round(self.achieved_rate, 1),
            "seconds": round(max(seconds, 0.0), 3),
        }


def main() -> None:
    """Command line: one flood, its figures as JSON on stdout (SIGTERM ends it early)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--shop", help="junk from this shop's client")
    which.add_argument("--doors", help="door events of these shops (comma-separated)")
    parser.add_argument("--client-id", help="MQTT client id (default flood-SHOP or doors-PID)")
    parser.add_argument("--seq-base", type=int, default=0, help="first door event's seq")
    parser.add_argument("--rate", type=int, default=5000)
    parser.add_argument("--count", type=int, default=30000)
    args = parser.parse_args()
    if args.shop:
        body, client_id = junk(args.shop), f"flood-{args.shop}"
    else:
        shops = args.doors.split(",")
        body = door_events(shops, args.seq_base, ("door_open", "door_close"))
        client_id = f"doors-{os.getpid()}"
    flood = RatePublisher(args.url, args.client_id or client_id, args.rate, args.count, body)

    def end_early(_signum: int, _frame: FrameType | None) -> None:
        flood.stop()

    signal.signal(signal.SIGTERM, end_early)
    flood.start()
    flood.join(args.count / args.rate + 60)
    print(json.dumps(flood.figures()), flush=True)  # noqa: T201 - the command's output


if __name__ == "__main__":
    main()
