"""Ingest shop alarm panels' events from the block's MQTT broker.

Subscribes to ``lianfang/v1/shop/{shop_id}/event`` for each shop it serves
(so gateways can share a broker) with a persistent session (QoS 1), turns
each message into an ``Event`` and acknowledges it to the broker only once the
event is in the journal, so that a crash in between leaves the message with
the broker. Bad messages are counted, logged at a limited rate, acknowledged
(so the broker does not send them again) and dropped.

Each message is judged as it is read off the socket, before it queues: junk
is dropped there, alarms go to the urgent lane and overtake routine events,
and a shop sending more non-alarm events than ``shop_event_cap`` per
``shop_event_window_s`` has the excess dropped and counted as ``throttled``
(alarms and trouble are never throttled). Events a device stamped while our
link was down are a backlog the broker kept, read far faster than sent: they
are counted at their device times too (decision 105). A flood from one client
therefore neither fills the queue an alarm waits in nor holds the broker's
window. A message is validated and made an event there, once; a redelivered
message the screen let through before does not count against its shop's cap
again.

Two things make the ingest reconnect on purpose, without a link fault: the end
of a storage shortage (the broker then sends again what the journal refused:
MQTT has no other way to ask for unacknowledged messages), and a reload that
changed the shops served (new topic filters).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections import Counter, OrderedDict
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from paho.mqtt.client import MQTTMessage
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

from drivers.base import DriverContext, Emit
from drivers.mqtt_ingest_config import MqttIngestConfig
from gateway.errors import DriverUnavailable
from gateway.events import (
    EVENT_CLASS,
    ORDER_BOUND_KINDS,
    Event,
    EventClass,
    EventKind,
    Source,
    new_event_id,
    utc_now,
)
from gateway.journal import RECENT_ORIGIN_KEYS
from gateway.mqtt.client import first_leaf
from gateway.mqtt.limits import UNLIMITED_RECEIVE_MAXIMUM, LinkDown
from gateway.mqtt.link import Lane, MqttLink
from gateway.mqtt.retained import replayed
from gateway.ratelimit import Outages, RateLimitedLog, WindowCap
from gateway.state_file import StateFile
from gateway.storage import StorageReserve

logger = logging.getLogger(__name__)

KIND = "mqtt_ingest"
MAX_ATTRS = 16
MAX_ATTR_TEXT = 256
# A device clock this far ahead of ours, or behind it, is wrong; its events keep our time.
MAX_CLOCK_AHEAD = timedelta(minutes=5)
MAX_CLOCK_BEHIND = timedelta(hours=24)
# Kinds the gateway makes itself, never accepted from a device.
GATEWAY_KINDS = frozenset({EventKind.SUPERVISION_LOST})
# While the link is up, how often its state file says so: after a kill -9 or a power
# cut, the link was lost at most this long after the time the file holds (decision 105).
LINK_UP_MARK_EVERY_S = 60.0
# Never throttled, whatever the shop sends besides.
UNCAPPED_CLASSES = frozenset({EventClass.ALARM, EventClass.TROUBLE})


class PanelMessage(BaseModel):
    """The payload contract of ``lianfang/v1/shop/{shop_id}/event``."""

    model_config = ConfigDict(extra="allow", frozen=True)

    device_id: StrictStr = Field(min_length=1, max_length=40)
    kind: EventKind
    zone: StrictStr | StrictInt | None = None
    ts: StrictStr | float | None = None
    seq: StrictInt | None = Field(default=None, ge=0)


class _PlannedReconnect(Exception):  # noqa: N818 - a request, not an error
    """Leave the connection cleanly and make a new one; the message says why."""


class Rejected(Exception):  # noqa: N818 - a verdict, not an error of ours
    """Why a message was dropped; ``reason`` is the counter name."""

    def __init__(self, reason: str, detail: str) -> None:
        """Name the counter and say what was wrong."""
        super().__init__(detail)
        self.reason = reason


class MqttIngestDriver:
    """Turns panel messages into events; acknowledges each once it is durable."""

    kind: ClassVar[str] = KIND

    def __init__(self, config: MqttIngestConfig, *, context: DriverContext) -> None:
        """Serve the shops and devices in ``context``."""
        self.config = config
        self._context = context
        self.rejected: Counter[str] = Counter()
        self.warnings: list[str] = []
        """What the installer should see on the status page and in ``lianfang status``."""
        self._log = RateLimitedLog(logger)
        self.link_up = asyncio.Event()
        self._source_prefix, _, self._source_suffix = config.topic.partition("+")
        self._shop_cap = WindowCap(config.shop_event_cap, config.shop_event_window_s)
        # The same cap counted in the devices' own time, for a backlog only (decision 105).
        self._shop_cap_device_time = WindowCap(config.shop_event_cap, config.shop_event_window_s)
        self._up_mark = (
            None
            if context.state_dir is None
            else StateFile(context.state_dir / f"{config.name}-link-up.json")
        )
        self.outages = Outages(
            # The link may be dead for two keep-alives before the client notices, and
            # an event sent a window before it was lost may still be in its window.
            2 * context.block_broker.keepalive_s + config.shop_event_window_s,
            lost_at=self._last_up_mark(),
        )
        """When the link was down: a device time inside an outage is a backlog's."""
        # Origin keys of the messages the screen let through under the cap: a copy the
        # broker sends again (after a reconnect, or after a shortage refused it) is not
        # a new event of its shop and does not count again.
        self._counted: OrderedDict[str, None] = OrderedDict()
        # The screen's event for each message it queued, by id(message); the message is
        # kept with it, so the id is not reused while the entry lives.
        self._screened: dict[int, tuple[MQTTMessage, Event, str | None]] = {}
        self._subscribed: list[str] = []
        self._reconnect = asyncio.Event()
        self._reconnect_why = ""

    def shops_changed(self) -> None:
        """After a reload: reconnect if the shops served now need other topic filters.

        The broker keeps nothing for a topic no one subscribes to, so a shop the
        reload added must be subscribed before its first press.
        """
        if self.filters() != self._subscribed:
            self._plan_reconnect("the shops changed on reload: subscribing to the new set")

    async def run(self, emit: Emit) -> None:
        """Subscribe and ingest until cancelled; raise ``DriverUnavailable`` on link loss.

        A planned reconnect (a shortage ended, the shops changed) leaves the
        connection cleanly and opens the next one here: no link fault is raised.
        """
        while True:
            try:
                await self._connected(emit)
            except* (LinkDown, OSError) as group:
                raise DriverUnavailable(
                    f"block broker {self._context.block_broker.url}: {first_leaf(group)}"
                ) from None

    async def _connected(self, emit: Emit) -> None:
        """One connection: ingest until it fails or a reconnect is planned."""
        self._subscribed = self.filters()
        self._reconnect.clear()
        self._screened.clear()  # what an earlier connection queued went with it
        link = MqttLink(
            self._context.block_broker,
            client_id=f"lianfang-{self._context.gateway_id}-{self.config.name}",
            persistent=True,
            subscribe=self._subscribed,
            # A gateway before per-shop filters subscribed the wildcard in this session.
            unsubscribe=[self.config.topic] if "+" in self.config.topic else [],
            max_unacked=self.config.receive_maximum,
            screen=self.screen,
            # Let the broker send all it has: what waits in its queue beyond those in
            # flight is capped (a stock Mosquitto keeps 1,000, then drops, alarms too),
            # while junk is dropped here as fast as it is read, and reading still stops
            # at receive_maximum unacknowledged events.
            receive_maximum=UNLIMITED_RECEIVE_MAXIMUM,
        )
        came_up = False
        try:
            async with link:
                came_up = True
                self.outages.up(time.time())
                self.link_up.set()
                try:
                    async with asyncio.TaskGroup() as tg:
                        tg.create_task(link.watch(), name=f"{self.config.name}.link")
                        tg.create_task(self._mark_up(), name=f"{self.config.name}.up-mark")
                        tg.create_task(
                            self._until_reconnect(), name=f"{self.config.name}.reconnect"
                        )
                        if self._context.storage is not None:
                            tg.create_task(
                                self._refetch_after_shortage(self._context.storage),
                                name=f"{self.config.name}.storage",
                            )
                        tg.create_task(self._ingest(link, emit), name=f"{self.config.name}.ingest")
                except* _PlannedReconnect as planned:
                    # Handled inside ``async with link``: the link is left with a DISCONNECT.
                    logger.info("%s: reconnecting: %s", self.config.name, first_leaf(planned))
        finally:
            # Once the link is closed: until then a message read proves it up.
            if came_up:
                self.outages.lost(time.time())
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    # A stop: the file says when, exactly. At a link fault the
                    # periodic save is recent enough, and no sync on the loop
                    # holds up the other drivers' alarms meanwhile.
                    self._save_up_mark()

    def _last_up_mark(self) -> float | None:
        """When the link was last known up before this process, if a state file says so.

        No file (a new gateway), or one that cannot be read: no outage is known,
        and no device time counts as a backlog's.
        """
        if self._up_mark is None:
            return None
        try:
            return float(json.loads(self._up_mark.path.read_text())["up_at"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError, KeyError) as exc:
            logger.warning("%s: ignoring %s: %s", self.config.name, self._up_mark.path, exc)
            return None

    def _save_up_mark(self) -> None:
        """Write that the link was up until now, at a stop."""
        if self._up_mark is None:
            return
        try:
            self._up_mark.save(_up_mark_text())
        except OSError as exc:
            self._up_mark_failed(exc)
        else:
            self.warnings.clear()

    async def _mark_up(self) -> None:
        """Keep the link's state file within ``LINK_UP_MARK_EVERY_S`` of now while it is up."""
        if self._up_mark is None:
            return
        while True:
            try:
                await self._up_mark.save_in_thread(_up_mark_text())
            except OSError as exc:
                self._up_mark_failed(exc)
            else:
                self.warnings.clear()
            await asyncio.sleep(LINK_UP_MARK_EVERY_S)

    def _up_mark_failed(self, exc: OSError) -> None:
        # Only a backlog after a restart pays: it is held to the cap by arrival.
        self._log.warning("up-mark", "%s: cannot save the link state: %s", self.config.name, exc)
        warning = (
            f"{self.config.name}: cannot save the link state ({exc}): after a restart, what the"
            " broker kept for the shops is held to the shop cap as if sent live (state_dir full"
            " or read-only?)"
        )
        self.warnings[:] = [warning]

    async def _ingest(self, link: MqttLink, emit: Emit) -> None:
        """Hand each message's event, made by the screen, to ``emit``; ack it once durable."""
        while True:
            message, generation = await link.messages.get()
            link.taken(message)
            ack = functools.partial(link.ack, message, generation)
            if replayed(message, self.rejected, self.config.name):
                ack()
                continue
            _, event, origin_key = self._screened.pop(id(message))
            await emit(event, on_durable=ack, origin_key=origin_key)

    def _plan_reconnect(self, why: str) -> None:
        self._reconnect_why = why
        self._reconnect.set()

    async def _until_reconnect(self) -> None:
        await self._reconnect.wait()
        raise _PlannedReconnect(self._reconnect_why)

    async def _refetch_after_shortage(self, storage: StorageReserve) -> None:
        """When a storage shortage ends, reconnect: the broker sends what was refused again."""
        await storage.shortage_ended()
        self._plan_reconnect("storage is back: fetching the messages held during the shortage")

    def filters(self) -> list[str]:
        """One topic filter per shop served: other gateways' shops never reach us."""
        if "+" not in self.config.topic:
            return [self.config.topic]
        return [self.config.topic.replace("+", shop, 1) for shop in sorted(self._context.devices)]

    def screen(self, message: MQTTMessage) -> Lane | None:
        """The lane of ``message`` as it is read; None drops it (junk, or over its shop's cap).

        The event made of a message that passes waits for the ingest loop with it.
        """
        # The link is up once a message is read: the broker sends a session's backlog
        # right after its CONNACK, before the link says it is up.
        self.outages.up(time.time())
        if message.retain:
            return Lane.ROUTINE  # a replay: the reader counts it, never as an event
        try:
            event, origin_key = self.parse(
                _topic(message), message.payload, redelivered=message.dup
            )
        except Rejected as rejection:
            self._count(rejection, message)
            return None
        lane = self._lane(event, origin_key)
        if lane is not None:
            self._screened[id(message)] = (message, event, origin_key)
        return lane

    def _lane(self, event: Event, origin_key: str | None) -> Lane | None:
        """Alarms urgent; the rest routine, unless its shop is over the cap (None)."""
        event_class = EVENT_CLASS[event.kind]
        if event_class is EventClass.ALARM:
            return Lane.URGENT
        # Cancels, restores, arming: their shop's later alarm takes them along, in order.
        routine = Lane.BOUND if event.kind in ORDER_BOUND_KINDS else Lane.ROUTINE
        if event_class in UNCAPPED_CLASSES or origin_key in self._counted:
            return routine
        shop_id = str(event.shop_id)
        # A backlog the broker kept while our link was down is read far faster than it
        # was sent; its device times show the pace it was sent at. So an event stamped
        # inside an outage may pass by its device time too; any other (live, or stamped
        # in the future or before the outage) only by arrival: a forged clock then gets
        # no more than what the outage could have held (decision 105).
        # One that passes by its device time spends none of the arrival count, which is
        # left whole for the shop's live events read in the same window as the backlog.
        sent_at = event.occurred_at.timestamp()
        by_device_time = self.outages.covers(sent_at) and self._shop_cap_device_time.allow(
            shop_id, sent_at
        )
        if by_device_time or self._shop_cap.allow(shop_id):
            if origin_key is not None:
                self._counted[origin_key] = None
                if len(self._counted) > RECENT_ORIGIN_KEYS:
                    self._counted.popitem(last=False)
            return routine
        self.rejected["throttled"] += 1
        self._log.warning(
            f"throttled/{shop_id}",
            "%s: shop %s sends more than %d non-alarm events in %g s: dropping the excess "
            "(its alarms still pass)",
            self.config.name,
            shop_id,
            self.config.shop_event_cap,
            self.config.shop_event_window_s,
        )
        return None

    def _count(self, rejection: Rejected, message: MQTTMessage) -> None:
        self.rejected[rejection.reason] += 1
        self._log.warning(
            rejection.reason,
            "%s: dropped message on %r: %s",
            self.config.name,
            _shown_topic(message),
            rejection,
        )

    def parse(
        self,
        topic: str,
        payload: Any,  # noqa: ANN401 - any payload
        *,
        redelivered: bool = False,
    ) -> tuple[Event, str | None]:
        """The event in one message, and its origin key; raise ``Rejected`` if unusable.

        ``redelivered`` is the broker's DUP flag: the message was sent to us before.
        """
        shop_id, message = self._validated(topic, payload)
        now = utc_now()
        attrs = _attrs(message.model_extra or {})
        occurred = _device_time(message.ts, now)
        if occurred is None:
            attrs["device_ts"] = str(message.ts)[:MAX_ATTR_TEXT]
        if message.seq is not None:
            attrs["seq"] = message.seq
        event = Event(
            id=new_event_id(),
            gateway_id=self._context.gateway_id,
            shop_id=shop_id,
            device_id=message.device_id,
            zone=None if message.zone is None else str(message.zone),
            kind=message.kind,
            occurred_at=occurred or now,
            received_at=now,
            source=Source(driver=self.config.name, ref=topic),
            attrs=attrs,
        )
        return event, self._origin_key(shop_id, message, redelivered=redelivered)

    def _validated(
        self,
        topic: str,
        payload: Any,  # noqa: ANN401 - any payload
    ) -> tuple[str, PanelMessage]:
        """The shop and the checked payload of one message; raise ``Rejected`` if unusable."""
        if not isinstance(payload, bytes | bytearray):
            raise Rejected("malformed", "payload is not bytes")
        if len(payload) > self.config.max_payload_bytes:
            raise Rejected(
                "oversize", f"{len(payload)} bytes, limit {self.config.max_payload_bytes}"
            )
        shop_id = self._shop_of(topic)
        try:
            message = PanelMessage.model_validate_json(payload)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"]) or "payload"
            reason = "malformed" if err["type"].startswith("json") else "invalid"
            raise Rejected(reason, f"{where}: {err['msg']}") from None
        if message.device_id not in self._context.devices[shop_id]:
            raise Rejected("unknown_device", f"shop {shop_id} has no device {message.device_id!r}")
        if message.kind in GATEWAY_KINDS:
            raise Rejected("invalid", f"kind {message.kind} is the gateway's own")
        return shop_id, message

    def _origin_key(self, shop_id: str, message: PanelMessage, *, redelivered: bool) -> str | None:
        """The device's identity of this message, when repeats can be told apart safely.

        ``seq`` with the device's own ``ts`` identifies a message across panel
        retransmissions and broker redeliveries; a panel that restarts its
        ``seq`` after a power cut sends a new ``ts``, so its new alarms are never
        taken for repeats. Without ``ts``, only the broker's DUP flag (a
        redelivery after our crash) makes ``seq`` safe to compare.
        """
        if message.seq is None or (message.ts is None and not redelivered):
            return None
        return f"{self.config.name}/{shop_id}/{message.device_id}/{message.seq}/{message.ts or ''}"

    def _shop_of(self, topic: str) -> str:
        if not (topic.startswith(self._source_prefix) and topic.endswith(self._source_suffix)):
            raise Rejected("malformed", "topic outside the subscription")
        shop_id = topic[len(self._source_prefix) : len(topic) - len(self._source_suffix)]
        if shop_id not in self._context.devices:
            raise Rejected("unknown_shop", f"shop {shop_id[:40]!r} is not served by this gateway")
        return shop_id


def _up_mark_text() -> str:
    return json.dumps({"up_at": time.time()})


def _topic(message: MQTTMessage) -> str:
    try:
        return message.topic
    except UnicodeDecodeError:
        raise Rejected("malformed", "topic is not UTF-8") from None


def _shown_topic(message: MQTTMessage) -> str:
    try:
        return message.topic[:120]
    except UnicodeDecodeError:
        return "<topic not UTF-8>"


def _attrs(extra: dict[str, Any]) -> dict[str, Any]:
    """Keep a bounded number of scalar extras; drop nested structures."""
    kept: dict[str, Any] = {}
    for key, value in list(extra.items())[:MAX_ATTRS]:
        if isinstance(value, str):
            kept[key[:40]] = value[:MAX_ATTR_TEXT]
        elif isinstance(value, bool | int | float) or value is None:
            kept[key[:40]] = value
    return kept


def _device_time(ts: str | float | None, now: datetime) -> datetime | None:
    """The device's clock reading, if it is plausible; else None (we keep our own time)."""
    if ts is None:
        return now
    try:
        if isinstance(ts, str):
            when = datetime.fromisoformat(ts)
            when = when if when.tzinfo else when.replace(tzinfo=UTC)
        else:
            when = datetime.fromtimestamp(ts, UTC)
    except (ValueError, OverflowError, OSError):
        return None
    if when - now > MAX_CLOCK_AHEAD or now - when > MAX_CLOCK_BEHIND:
        return None
    return when.astimezone(UTC)
