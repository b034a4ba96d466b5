"""Devices shops already buy (Zigbee2MQTT, Tasmota, Shelly), mapped to events by configuration.

Subscribes to the topics of the devices it lists, on the block's broker or on
the one ``broker`` names, with a persistent session (QoS 1), and turns each
message into events through the device's preset and custom mappings
(``drivers.device_maps``). A message is acknowledged to the broker once its
events are in the journal. A retained message at subscribe is the device's
state, not news: it seeds the mappings' states and raises nothing. Payloads
no mapping understands, bad bytes and codes no device has are counted, never
fatal; unknown codes are listed in ``lianfang status`` for ``lianfang learn``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import Counter
from typing import ClassVar

from paho.mqtt.client import MQTTMessage

from drivers.base import DriverContext, Emit
from drivers.device_maps import (
    Outcome,
    code_of,
    decode,
)
from drivers.mqtt_devices_config import MqttDevicesConfig
from drivers.supervision import SUPERVISION_LOST, Supervision
from gateway.errors import DriverUnavailable
from gateway.events import RESTORES_ATTR, Event, EventKind
from gateway.mqtt.client import BrokerConfig, first_leaf
from gateway.mqtt.limits import LinkDown
from gateway.mqtt.link import MqttLink
from gateway.ratelimit import RateLimitedLog

logger = logging.getLogger(__name__)

KIND = "mqtt_devices"
MAX_UNKNOWN = 64


class MqttDevicesDriver:
    """Maps device payloads to events; acknowledges each message once its events are durable."""

    kind: ClassVar[str] = KIND

    def __init__(self, config: MqttDevicesConfig, *, context: DriverContext) -> None:
        """Serve the devices in ``config``."""
        self.config = config
        self._context = context
        self.link_up = asyncio.Event()
        self.rejected: Counter[str] = Counter()
        self.unknown_codes: dict[str, float] = {}
        """Codes heard but not bound, with the wall-clock time each was last pressed."""
        self._log = RateLimitedLog(logger)
        self._devices = {(d.shop_id, d.device_id): d for d in config.devices}
        self._mappers = {key: d.mapper(config.burst_s) for key, d in self._devices.items()}
        self._plain: dict[str, list[tuple[str, str]]] = {}
        self._coded: dict[str, dict[str, tuple[str, str]]] = {}
        self._code_keys: dict[str, str] = {}
        for key, device in self._devices.items():
            for topic in self._mappers[key].topics:
                if device.code is not None and device.code_key is not None:
                    self._coded.setdefault(topic, {})[device.code] = key
                    self._code_keys[topic] = device.code_key
                else:
                    self._plain.setdefault(topic, []).append(key)
        self._unknown_heard: dict[str, float] = {}
        self.supervision = Supervision(
            config.name,
            context,
            [(d, d.supervision_s or config.supervision_s) for d in config.devices],
        )

    @property
    def broker(self) -> BrokerConfig:
        """The broker the devices publish to."""
        return self.config.broker or self._context.block_broker

    async def run(self, emit: Emit) -> None:
        """Subscribe and map until cancelled; raise ``DriverUnavailable`` on link loss."""
        link = MqttLink(
            self.broker,
            client_id=f"lianfang-{self._context.gateway_id}-{self.config.name}",
            persistent=True,
            subscribe=self.config.topics(),
            max_unacked=self.config.receive_maximum,
        )
        try:
            async with link, asyncio.TaskGroup() as tg:
                self.link_up.set()
                tg.create_task(link.watch(), name=f"{self.config.name}.link")
                tg.create_task(self.supervision.watch(emit), name=f"{self.config.name}.supervise")
                while True:
                    message, generation = await link.messages.get()
                    link.taken(message)
                    ack = functools.partial(link.ack, message, generation)
                    events = self._events_of(message)
                    for event in events[:-1]:
                        await emit(event)
                    if events:
                        await emit(events[-1], on_durable=ack)
                    else:
                        ack()
        except* (LinkDown, OSError) as group:
            raise DriverUnavailable(f"broker {self.broker.url}: {first_leaf(group)}") from None

    def _events_of(self, message: MQTTMessage) -> list[Event]:
        try:
            topic = message.topic
        except UnicodeDecodeError:
            self._reject("malformed", "<topic not UTF-8>", "topic is not UTF-8")
            return []
        return self.handle(topic, message.payload, retained=bool(message.retain))

    def handle(
        self, topic: str, payload: bytes | bytearray, *, retained: bool = False
    ) -> list[Event]:
        """The events one message means; bad or unknown messages are counted and dropped."""
        if len(payload) > self.config.max_payload_bytes:
            self._reject("oversize", topic, f"{len(payload)} bytes")
            return []
        try:
            value = decode(payload)
        except UnicodeDecodeError:
            self._reject("malformed", topic, "payload is neither JSON nor UTF-8 text")
            return []
        keys = list(self._plain.get(topic, ()))
        coded = self._coded.get(topic)
        if coded is not None:
            code = code_of(value, self._code_keys[topic])
            if code in coded:
                keys.append(coded[code])
            elif code is not None:
                if not retained:
                    self._unknown_code(code)
                return []
        now = time.monotonic()
        events: list[Event] = []
        understood = False
        for key in keys:
            outcomes, found = self._mappers[key].feed(topic, value, now=now, retained=retained)
            understood |= found
            if not retained:
                events += self._heard(key, topic, outcomes)
        if not understood:
            self._reject("unknown_shape", topic, f"no mapping reads {str(value)[:80]!r}")
        return events

    def _heard(self, key: tuple[str, str], topic: str, outcomes: list[Outcome]) -> list[Event]:
        """Events of a live message from device ``key``, with its supervision restore first."""
        device = self._devices[key]
        events = []
        # A message about the device's link (Zigbee2MQTT's availability) is not a sign of life.
        if not self._mappers[key].about_link(topic) and self.supervision.heard(device):
            events.append(
                self._context.event(
                    self.config.name,
                    device,
                    EventKind.RESTORE,
                    ref=topic,
                    attrs={"of": SUPERVISION_LOST},
                )
            )
        for outcome in outcomes:
            # Zigbee2MQTT's availability is a second watcher of the device's supervision:
            # a device lost (or found) by one is not lost (or found) again by the other.
            lost = outcome.kind is EventKind.SUPERVISION_LOST
            about_supervision = lost or outcome.attrs.get(RESTORES_ATTR) == SUPERVISION_LOST
            if about_supervision and not self.supervision.report(device, lost=lost):
                continue
            events.append(
                self._context.event(
                    self.config.name,
                    device,
                    outcome.kind,
                    ref=topic,
                    zone=outcome.zone,
                    attrs=outcome.attrs,
                )
            )
        return events

    def _unknown_code(self, code: str) -> None:
        now = time.monotonic()
        last = self._unknown_heard.get(code)
        self._unknown_heard[code] = now
        if last is not None and now - last < self.config.burst_s:
            return  # the same press, repeated
        self.rejected["unknown_code"] += 1
        self.unknown_codes[code] = time.time()
        for table in (self.unknown_codes, self._unknown_heard):
            if len(table) > MAX_UNKNOWN:
                del table[min(table, key=table.__getitem__)]
        self._log.warning("unknown", "%s: unknown code %s", self.config.name, code)

    def _reject(self, reason: str, topic: str, detail: str) -> None:
        self.rejected[reason] += 1
        self._log.warning(
            reason, "%s: dropped message on %r: %s", self.config.name, topic[:120], detail
        )
