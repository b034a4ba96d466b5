"""SMS to alerted shops and from shops' phones, through one modem served by one task.

Outbound: ``submit`` (called where neighbour notices are sent, after the notice
cap and the cool-down) queues one SMS per alerted shop with a phone, in alert
order and the origin's nearest first. It never waits: the texts are worded and
handed to the modem by ``run``, one ``AT+CMGS`` at a time, so the MQTT notices
never wait for the modem. A message leaves the queue only when the modem took
it; ``+CMS ERROR`` is retried a few times, a dead modem keeps the queue until it
is back, an expired alert's messages are dropped and counted.

Inbound: each message the modem stores (``+CMTI``) or finds on the SIM at
start is read, decoded and journalled, then deleted from the SIM. From a shop's
registered phone it may raise a panic (``9#``), answer the latest alert the shop
received (``1`` coming, ``0`` safe) or cancel the shop's own alarm; from any
other number it is counted and journalled as a status event, never an alarm.
Every message gets a short answer; one that raises nothing (a stranger's, or
text the gateway does not understand) at most one an hour per number.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from gateway.actions import RuleActions
from gateway.config.model import GatewayConfig, SmsConfig
from gateway.errors import DriverUnavailable, GatewayError
from gateway.events import Event, EventKind, Source, new_event_id, utc_now
from gateway.intake import Intake
from gateway.mqtt.client import first_leaf
from gateway.ratelimit import RateLimitedLog
from gateway.sms.modem import (
    AtPort,
    ModemError,
    ModemState,
    Unsolicited,
    poll,
    read_message,
    send_pdu,
    start,
    stored_messages,
)
from gateway.sms.texts import (
    Command,
    Language,
    alert_text,
    command_of,
    confirmation,
    e164,
    stranger_text,
)
from protocols.sms_pdu import Deliver, PduError, StatusReport, decode, submit_pdus
from rules.neighbour_alert import NeighbourAlert

logger = logging.getLogger(__name__)

POLL_S = 30.0
"""How often SIM, registration and signal are read while the modem is registered."""
UNREGISTERED_POLL_S = 2.0
"""How often while it is not: messages wait for the network, so notice its return soon."""
MAX_ATTEMPTS = 4
RETRY_S = 1.0
DURABLE_WAIT_S = 10.0
IDLE_ANSWER_S = 3600.0
"""One answer an hour to a number that sends what raises nothing: SMS cost money."""
IDLE_ANSWERS_KEPT = 1000
REFERENCES_KEPT = 512
DEVICE = "sms"


@dataclass
class Outgoing:
    """One SMS waiting for the modem: an alert's notice (worded when sent) or a plain text."""

    number: str
    shop_id: str | None
    alert_id: str | None
    notice: bytes | None = None
    text: str = ""
    expires_at: float | None = None
    attempts: int = 0
    parts_sent: int = 0
    concatenation: int | None = None  # the reference its parts share, fixed at the first try


class SmsService:
    """Texts alerted shops and takes shops' SMS through the modem in ``config.sms``."""

    def __init__(
        self,
        config: GatewayConfig,
        intake: Intake,
        actions: RuleActions,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Serve ``config``'s shops; events go to ``intake``."""
        assert config.sms is not None
        self.config: SmsConfig = config.sms
        self._gid = config.gateway.id
        self._intake = intake
        self._actions = actions
        self._clock = clock
        self._language: Language = config.neighbour_alert.language
        self._zone = ZoneInfo(config.rules.timezone) if config.rules.timezone else None
        self._texting = "sms" in config.neighbour_alert.channels
        self.phones = {
            s.id: number
            for s in config.shops
            if s.phone and (number := e164(s.phone, self.config.country_code))
        }
        self._shop_of = {number: shop for shop, number in self.phones.items()}
        self.link_up = asyncio.Event()
        self.state: ModemState | None = None
        self._queue: deque[Outgoing] = deque()
        self._heard: deque[Unsolicited] = deque()
        self._wake = asyncio.Event()
        self._next_poll = 0.0
        self._latest_alert: dict[str, str] = {}
        self._references: OrderedDict[int, Outgoing] = OrderedDict()
        self._next_reference = 0
        self._idle_answered: OrderedDict[str, float] = OrderedDict()
        self._log = RateLimitedLog(logger, interval_s=60)
        self.counts = dict.fromkeys(
            (
                "sent",
                "retried",
                "failed",
                "expired",
                "received",
                "unknown_senders",
                "garbled",
                "delivered",
                "not_delivered",
            ),
            0,
        )

    # --- the hot path: never waits ------------------------------------------------------

    def submit(self, alert: NeighbourAlert) -> None:
        """Queue one SMS per alerted shop with a phone; remember each shop's latest alert."""
        for notice in alert.notices:
            self._latest_alert[notice.shop_id] = alert.alert_id
            number = self.phones.get(notice.shop_id)
            if self._texting and number is not None:
                self._queue.append(
                    Outgoing(
                        number,
                        notice.shop_id,
                        alert.alert_id,
                        notice=notice.payload,
                        expires_at=alert.expires_at_monotonic,
                    )
                )
        self._wake.set()

    def status(self) -> dict[str, Any]:
        """The modem's state and the counters, for the status message and ``lianfang status``."""
        state = self.state
        return {
            "sim": state.sim if state else "unknown",
            "registration": state.registration if state else "unknown",
            "signal_dbm": state.signal_dbm if state else None,
            "queued": len(self._queue),
            **self.counts,
        }

    # --- the modem's task ----------------------------------------------------------------

    async def run(self) -> None:
        """Serve the modem until cancelled; raise ``DriverUnavailable`` when it fails."""
        port = AtPort(self.config.port, self.config.baudrate, self._unsolicited)
        await port.open()
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(port.read(), name="sms.read")
                tg.create_task(self._serve(port), name="sms.serve")
        except* (GatewayError, OSError) as group:
            raise DriverUnavailable(f"modem {self.config.port}: {first_leaf(group)}") from None
        finally:
            self.state = None
            await port.close()

    def _unsolicited(self, heard: Unsolicited) -> None:
        self._heard.append(heard)
        self._wake.set()

    async def _serve(self, port: AtPort) -> None:
        await start(port, self.config.pin_file)
        await self._poll(port)
        self.link_up.set()
        for index, pdu in await stored_messages(port):
            await self._take(port, pdu, index)
        while True:
            if self._heard:
                await self._hear(port, self._heard.popleft())
            elif self._queue and self.state is not None and self.state.registered:
                await self._send_next(port)
            else:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, self._next_poll - self._clock())):
                        await self._wake.wait()
            if self._clock() >= self._next_poll:
                await self._poll(port)

    async def _poll(self, port: AtPort) -> None:
        """Read the modem's state; losing (or regaining) the network is a trouble event."""
        before, self.state = self.state, await poll(port)
        wait = POLL_S if self.state.registered else UNREGISTERED_POLL_S
        self._next_poll = self._clock() + wait
        was = before.registered if before else True
        if self.state.registered != was:
            kind = EventKind.RESTORE if self.state.registered else EventKind.DEVICE_FAULT
            detail = f"mobile network {self.state.registration}, SIM {self.state.sim}"
            await self._intake(self._event(kind, {"detail": detail}, "link:sms-network"))

    # --- outbound -----------------------------------------------------------------------------

    async def _send_next(self, port: AtPort) -> None:
        sms = self._queue[0]
        if sms.expires_at is not None and self._clock() >= sms.expires_at:
            self._queue.popleft()
            self.counts["expired"] += 1
            return
        if sms.notice is not None and not sms.text:
            sms.text = alert_text(sms.notice, self._language, self._zone)
        if sms.concatenation is None:
            self._next_reference = (self._next_reference + 1) % 256
            sms.concatenation = self._next_reference
        try:
            pdus = submit_pdus(
                sms.number, sms.text, smsc=self.config.smsc, reference=sms.concatenation
            )
        except PduError as exc:  # a number the network cannot take: nothing to retry
            self._queue.popleft()
            self.counts["failed"] += 1
            self._log.warning("unsendable", "SMS to %s cannot be sent: %s", sms.number, exc)
            return
        try:
            for pdu in pdus[sms.parts_sent :]:
                reference = await send_pdu(port, pdu.hex, pdu.tpdu_length)
                sms.parts_sent += 1
                self._references[reference] = sms
                if len(self._references) > REFERENCES_KEPT:
                    self._references.popitem(last=False)
        except ModemError as refused:
            await self._poll(port)  # most refusals mean no network: then wait for it, not retry
            if self.state is not None and not self.state.registered:
                return
            sms.attempts += 1
            if sms.attempts < MAX_ATTEMPTS:
                self.counts["retried"] += 1
                self._log.warning("retry", "SMS to %s: %s; retrying", sms.number, refused.final)
                await asyncio.sleep(RETRY_S * sms.attempts)
                return
            self._queue.popleft()
            self.counts["failed"] += 1
            self._log.warning("failed", "SMS to %s given up: %s", sms.number, refused.final)
            return
        self._queue.popleft()
        self.counts["sent"] += 1

    def _answer(self, number: str, text: str) -> None:
        if number.removeprefix("+").isdigit():  # an operator's or a bank's name cannot be answered
            self._queue.append(Outgoing(number, self._shop_of.get(number), None, text=text))

    # --- inbound --------------------------------------------------------------------------------

    async def _hear(self, port: AtPort, heard: Unsolicited) -> None:
        if heard.pdu is not None:  # +CMT / +CDS: the message itself, nothing stored
            await self._take(port, heard.pdu, None)
            return
        try:
            index = int(heard.line.rsplit(",", 1)[1])
        except (IndexError, ValueError):
            self.counts["garbled"] += 1
            return
        pdu = await read_message(port, index)
        if pdu is not None:
            await self._take(port, pdu, index)

    async def _take(self, port: AtPort, pdu: str, index: int | None) -> None:
        """Journal one stored or pushed PDU, then delete it from the SIM."""
        try:
            message = decode(pdu)
        except PduError as exc:
            self.counts["garbled"] += 1
            self._log.warning("garbled", "garbled SMS dropped: %s", exc)
            await self._durably(self._event(EventKind.SMS, {"pdu": pdu[:400], "error": str(exc)}))
        else:
            if isinstance(message, StatusReport):
                await self._report(message)
            elif isinstance(message, Deliver):
                await self._received(message)
            else:
                self.counts["garbled"] += 1
        if index is not None:
            await port.command(f"AT+CMGD={index}")

    async def _report(self, report: StatusReport) -> None:
        sms = self._references.get(report.reference)
        if sms is None or not report.final:
            return
        self.counts["delivered" if report.delivered else "not_delivered"] += 1
        attrs = {
            "direction": "report",
            "to": report.recipient,
            "alert_id": sms.alert_id,
            "delivered": report.delivered,
            "status": report.status,
        }
        await self._durably(self._event(EventKind.SMS, attrs, shop=sms.shop_id))

    async def _received(self, message: Deliver) -> None:
        self.counts["received"] += 1
        sender = e164(message.sender, self.config.country_code) or message.sender
        shop = self._shop_of.get(sender)
        attrs: dict[str, Any] = {"direction": "in", "from": sender, "text": message.text[:320]}
        if shop is None:
            self.counts["unknown_senders"] += 1
            await self._durably(self._event(EventKind.SMS, attrs))
            self._answer_idle(sender, stranger_text(self._language))
            return
        command = command_of(message.text, self.config.panic_words)
        done = True
        # A modem may hand over the same stored message again after a restart: the journal
        # drops the repeat by this key.
        key = hashlib.sha256(f"{sender}|{message.sent_at}|{message.text}".encode()).hexdigest()
        if command in (Command.PANIC, Command.CANCEL):
            kind = EventKind.PANIC if command is Command.PANIC else EventKind.CANCEL
            event = self._event(kind, attrs, shop=shop, ref=sender)
            await self._durably(event, origin_key=f"sms:{key[:32]}")
        elif command in (Command.COMING, Command.SAFE) and shop in self._latest_alert:
            answer = self._actions.response_event(shop, self._latest_alert[shop], command.value)
            answer = answer.model_copy(update={"attrs": {**answer.attrs, **attrs}})
            await self._durably(answer, gateway_made=True)
        else:  # not understood, or an answer when no alert reached the shop
            done = False
            await self._durably(self._event(EventKind.SMS, attrs, shop=shop))
        reply = confirmation(command, self._language, done=done)
        if done:
            self._answer(sender, reply)
        else:
            self._answer_idle(sender, reply)

    def _answer_idle(self, number: str, text: str) -> None:
        """Answer a message that raised nothing, at most once an hour per number."""
        last = self._idle_answered.get(number)
        if last is not None and self._clock() - last < IDLE_ANSWER_S:
            return
        self._idle_answered[number] = self._clock()
        self._idle_answered.move_to_end(number)
        if len(self._idle_answered) > IDLE_ANSWERS_KEPT:
            self._idle_answered.popitem(last=False)
        self._answer(number, text)

    async def _durably(
        self, event: Event, *, origin_key: str | None = None, gateway_made: bool = False
    ) -> None:
        """Hand ``event`` to the intake and wait (bounded) until the journal has it."""
        durable = asyncio.Event()
        if gateway_made or event.kind is EventKind.SMS:
            await self._intake.gateway_event(event, on_durable=durable.set)
        else:
            await self._intake(event, on_durable=durable.set, origin_key=origin_key)
        try:
            async with asyncio.timeout(DURABLE_WAIT_S):
                await durable.wait()
        except TimeoutError:
            # Left on the SIM: read again at the next start, where the journal drops a repeat.
            raise DriverUnavailable("journal did not take an SMS in time") from None

    def _event(
        self,
        kind: EventKind,
        attrs: dict[str, Any],
        device: str = DEVICE,
        *,
        shop: str | None = None,
        ref: str | None = None,
    ) -> Event:
        """An event of the SMS link: about the modem, a message, or a shop's request by SMS."""
        now = utc_now()
        return Event(
            id=new_event_id(),
            gateway_id=self._gid,
            shop_id=shop,
            device_id=device,
            kind=kind,
            occurred_at=now,
            received_at=now,
            source=Source(driver="sms", ref=ref or self.config.port),
            attrs=attrs,
        )
