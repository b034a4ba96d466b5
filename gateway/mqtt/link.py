"""One MQTT v5 connection of the gateway, on paho-mqtt's external-loop API.

Why not aiomqtt here (it still serves the firmware stubs): the gateway needs
three things it cannot give.

- Each QoS 1 publish resolves with the broker's verdict: a PUBACK carrying a
  failure reason code ("not authorized", "quota exceeded") fails the publish,
  so an alarm the police broker refused is never marked delivered.
- Reading is paced: past ``max_unacked`` unacknowledged messages the link stops
  reading its socket and resumes at half. Mosquitto 2.0 stops honouring Receive
  Maximum for a resumed session once acks flow, so without this a backlog pours
  into memory; with it TCP keeps the backlog in the broker.
- Manual acknowledgements (``ack``) once an event is durable.
- Every limit the broker announces in its CONNACK is honoured on the live
  connection (``BrokerLimits``, in ``limits``): Receive Maximum, Maximum
  Packet Size, retain, QoS; a broker unfit for alarms is refused in one sentence.

Received messages wait for their reader in ``lanes``; publishes wait for the
broker's window in ``window``: in both, alarms go first. The paho client is
``lean_client``'s: the common PUBLISH and PUBACK decoded without paho's
per-packet objects, the socket read in chunks (decision 112).

Use it as ``async with link:`` (connect, and subscribe if asked) and run
``link.watch()`` beside the work in the same TaskGroup; ``watch`` raises
``LinkDown`` when the connection is lost. Leaving the ``async with`` block
disconnects cleanly, so a final status publish inside the block still goes out.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Self

import paho.mqtt.client as paho
from paho.mqtt.reasoncodes import ReasonCode

from gateway.errors import PlatformNak
from gateway.mqtt.client import BrokerConfig, connect_properties
from gateway.mqtt.lanes import Lane, MessageLanes, Screen
from gateway.mqtt.lean_client import BufferedSocket, link_client
from gateway.mqtt.limits import (
    RETAIN_ADVICE,
    BrokerLimits,
    BrokerUnsuitable,
    LinkDown,
    PacketTooLarge,
    publish_packet_size,
    refusal,
)
from gateway.mqtt.window import PublishWindow, Waiting

__all__ = ["READ_BATCH", "Lane", "MessageLanes", "MqttLink", "Screen"]

logger = logging.getLogger(__name__)

MISC_INTERVAL_S = 1.0
CONNECT_TIMEOUT_S = 10.0
# Packets read per wake-up of the socket: enough that a flood costs few trips through
# the event loop, few enough that the loop still serves everything else between them.
READ_BATCH = 64
# Topic filters per SUBSCRIBE packet: a district gateway's thousands of shop topics go
# in a few packets, each far below any broker's Maximum Packet Size.
FILTERS_PER_SUBSCRIBE = 500


class MqttLink:
    """A persistent or clean MQTT v5 session: publish, and optionally a paced subscription."""

    def __init__(
        self,
        broker: BrokerConfig,
        *,
        client_id: str,
        persistent: bool,
        subscribe: str | Sequence[str] | None = None,
        max_unacked: int = 500,
        max_inflight: int = 256,
        will: tuple[str, bytes] | None = None,
        session_expiry_s: int = 7 * 24 * 3600,
        screen: Screen | None = None,
        receive_maximum: int | None = None,
        unsubscribe: Sequence[str] = (),
    ) -> None:
        """A link to ``broker`` as ``client_id``; ``will`` is a retained (topic, payload).

        At most ``max_inflight`` publishes (fewer if the broker's Receive Maximum
        says so) await their PUBACK at once; later ones wait their turn here.
        ``screen`` judges each received message as it is read: junk is
        acknowledged and dropped before it queues, and urgent messages overtake
        routine ones (without it every message is routine). ``receive_maximum``
        is what the CONNECT tells the broker it may send unacknowledged (default
        ``max_unacked``); reading still stops at ``max_unacked``. ``subscribe``
        is one topic filter or many; ``unsubscribe`` names filters an earlier
        version may have left in the persistent session, dropped before subscribing.
        """
        self._broker = broker
        self._filters = (subscribe,) if isinstance(subscribe, str) else tuple(subscribe or ())
        self._subacks_due = 0
        self._stale_filters = tuple(unsubscribe)
        self._max_unacked = max_unacked
        self._props = connect_properties(
            session_expiry_s=session_expiry_s if persistent else 0,
            receive_maximum=receive_maximum or max_unacked,
        )
        self._persistent = persistent
        # (message, connection generation); at most about ``max_unacked`` long.
        self.messages = MessageLanes()
        self._screen = screen
        self.unacked = 0
        self.paused = False
        self._client = link_client(client_id)
        self._max_inflight = max_inflight
        # paho sends every publish at once; the window is ours (``_send_waiting``),
        # because paho cannot change its own on a live connection.
        self._client.max_inflight_messages_set(0)
        self._client.max_queued_messages_set(0)
        if broker.username:
            self._client.username_pw_set(broker.username, broker.secret())
        if broker.tls is not None:
            self._client.tls_set_context(broker.tls.context())
        self._will = will
        self._will_retained = True
        if will is not None:
            self._client.will_set(will[0], will[1], qos=1, retain=True)
        self.limits = BrokerLimits()
        self._window = PublishWindow(max_inflight)
        self._retain_warned = False
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._client.on_publish = self._on_publish
        self._client.on_socket_open = self._on_socket_open
        self._client.on_socket_close = self._on_socket_close
        self._client.on_socket_register_write = self._on_socket_register_write
        self._client.on_socket_unregister_write = self._on_socket_unregister_write
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._sock: socket.socket | BufferedSocket | None = None
        self._connected: asyncio.Future[None] | None = None
        self._subscribed: asyncio.Future[None] | None = None
        self._asked: dict[int, list[str]] = {}  # SUBSCRIBE packet id -> its filters
        self._lost: asyncio.Future[None] | None = None
        self._publishes: dict[int, Waiting] = {}
        self._generation = 0
        self._last_read = 0.0
        self._qos0_queued = 0

    # --- the connection ------------------------------------------------------------

    async def __aenter__(self) -> Self:
        """Connect (and subscribe); raise ``LinkDown`` if that fails."""
        try:
            return await self._open()
        except BrokerUnsuitable as exc:
            if exc.advice != RETAIN_ADVICE or self._will is None or not self._will_retained:
                raise
        # A broker without retain refuses a retained will: keep the will, unretained.
        logger.warning(
            "broker %s does not support retained messages: gateway status is published "
            "without retain, so a client that connects later sees it only at the next refresh",
            self._broker.url,
        )
        self._will_retained = False
        self._client.will_set(self._will[0], self._will[1], qos=1, retain=False)
        return await self._open()

    async def _open(self) -> Self:
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._loop_thread = threading.get_ident()
        self._generation += 1
        self.unacked = 0
        self.paused = False
        self._window.resize(self._max_inflight)
        self._connected = loop.create_future()
        self._subscribed = loop.create_future()
        self._lost = loop.create_future()
        self._lost.add_done_callback(_retrieve)
        connecting = loop.run_in_executor(None, self._connect)
        try:
            await asyncio.shield(connecting)
        except OSError as exc:
            raise LinkDown(str(exc)) from exc
        except BaseException:
            # Cancelled while connect() runs in its thread: close what it opens.
            self._fail("cancelled while connecting")
            connecting.add_done_callback(self._abandon)
            raise
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                await self._first_of(self._connected)
                if self._filters:
                    self._send_subscribes()
                    # A resumed session is subscribed already, and its backlog comes
                    # before the SUBACK: waiting for that would read the whole
                    # backlog into memory first (decision 95). The SUBACK is read
                    # in its turn; a refusal then fails the link as before.
                    if not self.limits.session_present:
                        await self._first_of(self._subscribed)
                    self._maybe_pause()
        except TimeoutError as exc:
            self._close(clean=False)
            raise LinkDown(f"no CONNACK/SUBACK within {CONNECT_TIMEOUT_S:g} s") from exc
        except BaseException:
            self._close(clean=False)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Disconnect: cleanly (no will) when the work ended or was cancelled.

        After a failure the socket is just closed, so the broker publishes the will.
        """
        self._close(clean=exc_type is None or issubclass(exc_type, asyncio.CancelledError))

    async def watch(self) -> None:
        """Keep the connection alive until it is lost; then raise ``LinkDown``."""
        assert self._lost is not None
        # A resumed session's SUBACK comes after its backlog (decision 95): it is
        # awaited here, for CONNECT_TIMEOUT_S in which reading was on and nothing came
        # (while the backlog still arrives, however long, the SUBACK's turn is coming).
        unanswered_s, looked_at = 0.0, time.monotonic()
        while not self._lost.done():
            keepalive = self.limits.server_keep_alive or self._broker.keepalive_s
            if self.paused and time.monotonic() - self._last_read > keepalive / 2:
                # Paused reading must still see PINGRESPs: read one packet.
                self._read_once()
            if self._client.loop_misc() != paho.MQTT_ERR_SUCCESS:
                self._fail("keep-alive failed")
                break
            now = time.monotonic()
            if self._filters and self._subscribed is not None and not self._subscribed.done():
                silent = not self.paused and self._last_read < looked_at
                unanswered_s += now - looked_at if silent else 0.0
                if unanswered_s > CONNECT_TIMEOUT_S:
                    self._fail(f"no SUBACK within {CONNECT_TIMEOUT_S:g} s of reading")
                    break
            looked_at = now
            done, _ = await asyncio.wait({self._lost}, timeout=MISC_INTERVAL_S)
            if done:
                break
        self._lost.result()

    def fail(self, why: str) -> None:
        """Drop the connection on purpose (the peer misbehaved); ``watch`` raises."""
        self._fail(why)

    def _connect(self) -> None:
        self._client.connect(
            self._broker.host,
            self._broker.port,
            keepalive=self._broker.keepalive_s,
            clean_start=not self._persistent,
            properties=self._props,
        )

    def _abandon(self, connecting: asyncio.Future[None]) -> None:
        """A connect() nobody waits for any more has ended: close whatever it opened."""
        if not connecting.cancelled():
            connecting.exception()
        self._close(clean=False)

    def _close(self, *, clean: bool) -> None:
        if clean and self._client.socket() is not None:
            self._client.disconnect()
            # Send the DISCONNECT now: the reader and writer go away below.
            try:
                self._client.loop_write()
            except OSError:
                logger.debug("DISCONNECT not sent: socket already gone")
        sock = self._client.socket()  # None once paho sent DISCONNECT and closed it
        self._drop_socket()
        if sock is not None:
            sock.close()
        self._fail("link closed")

    async def _first_of(self, future: asyncio.Future[None]) -> None:
        """Wait for ``future`` unless the link is lost first."""
        assert self._lost is not None
        await asyncio.wait({future, self._lost}, return_when=asyncio.FIRST_COMPLETED)
        if self._lost.done():
            self._lost.result()
        future.result()

    # --- publishing ------------------------------------------------------------------

    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        retain: bool = False,
        urgent: bool = False,
        key: str | None = None,
        bound: bool = False,
    ) -> asyncio.Future[None]:
        """Publish at QoS 1 now; the future resolves on a successful PUBACK.

        It fails with ``PlatformNak`` when the broker's PUBACK says no, and with
        ``LinkDown`` when the link goes before the PUBACK comes. An ``urgent``
        publish (an alarm) that must wait for the broker's window goes ahead of
        every routine one waiting, and has window slots routine ones cannot
        take; urgent ones keep their call order. An urgent publish does not
        overtake a ``bound`` one with the same ``key`` (one shop's cancel
        before its panic): the broker gets those in call order.
        """
        assert self._loop is not None
        future: asyncio.Future[None] = self._loop.create_future()
        if self._lost is None or self._lost.done():
            future.set_exception(LinkDown("not connected"))
            return future
        if not self.fits(topic, payload):
            limit = self.limits.maximum_packet_size
            future.set_exception(PacketTooLarge.for_message(topic, payload, limit))
            return future
        if retain and not self.limits.retain_available:
            retain = False
            if not self._retain_warned:
                self._retain_warned = True
                logger.warning(
                    "broker %s has no retained messages: status on %s is published unretained",
                    self._broker.url,
                    topic,
                )
        # Behind any that wait in its lane, so the broker gets them in call order.
        self._window.queue(
            Waiting(topic, payload, retain, future, urgent=urgent, key=key, bound=bound)
        )
        self._send_waiting()
        if urgent:
            # paho only asks the loop to write (a writer callback); an alarm's bytes
            # go now, not after whatever else the loop's turn holds (decision 96).
            self._write()
        return future

    def fits(self, topic: str, payload: bytes) -> bool:
        """Whether the broker's Maximum Packet Size lets this message through."""
        limit = self.limits.maximum_packet_size
        return limit is None or publish_packet_size(topic, payload) <= limit

    def _send_waiting(self) -> None:
        """Send waiting publishes while the window allows."""
        while (waiting := self._window.next()) is not None:
            info = self._client.publish(
                waiting.topic, waiting.payload, qos=1, retain=waiting.retain
            )
            if info.rc != paho.MQTT_ERR_SUCCESS:
                # The connection cannot carry it: fail it with every other, not alone
                # (an owner waiting on the link would never learn of this one).
                self._window.requeue(waiting)
                self._fail(f"publish failed: {paho.error_string(info.rc)}")
                return
            self._publishes[info.mid] = waiting

    @property
    def waiting(self) -> int:
        """Publishes held back by the broker's Receive Maximum."""
        return self._window.waiting

    @property
    def in_flight(self) -> int:
        """Publishes sent and awaiting their PUBACK."""
        return self._window.in_flight

    def _on_publish(
        self, _c: paho.Client, _u: object, mid: int, reason: ReasonCode, _p: object
    ) -> None:
        sent = self._publishes.pop(mid, None)
        if sent is None:
            return
        self._window.settled(urgent=sent.urgent)
        self._settle(sent.future, mid, reason)
        self._send_waiting()

    def _settle(self, future: asyncio.Future[None], mid: int, reason: ReasonCode) -> None:
        if future.done():
            return
        if reason.is_failure:
            future.set_exception(
                PlatformNak(f"broker refused message {mid}: {reason}", code=reason.value)
            )
        else:
            future.set_result(None)

    # --- receiving ---------------------------------------------------------------------

    def ack(self, message: paho.MQTTMessage, generation: int) -> None:
        """Acknowledge ``message`` (received in connection ``generation``) to the broker."""
        if generation != self._generation or message.qos == 0:
            return  # that connection is gone; the broker will send it again
        self._client.ack(message.mid, message.qos)
        self.unacked -= 1
        self._maybe_resume()

    def taken(self, message: paho.MQTTMessage) -> None:
        """``message`` left ``messages``; a QoS 0 one may make room to read again."""
        if message.qos == 0:
            self._qos0_queued -= 1
            self._maybe_resume()

    def _maybe_resume(self) -> None:
        if self.paused and self.unacked + self._qos0_queued <= self._max_unacked // 2:
            self.paused = False
            if self._sock is not None and self._loop is not None:
                self._loop.add_reader(self._sock, self._read)
                # Bytes already read (or decrypted) wait where select() will not report them.
                self._loop.call_soon(self._read)

    def _on_message(self, _c: paho.Client, _u: object, message: paho.MQTTMessage) -> None:
        lane = Lane.ROUTINE if self._screen is None else self._screen(message)
        if lane is None:
            if message.qos > 0:
                self._client.ack(message.mid, message.qos)
            return
        if message.qos > 0:
            self.unacked += 1
        else:
            self._qos0_queued += 1
        self.messages.put_nowait((message, self._generation), lane)
        # Messages before the SUBACK while ``_open`` waits for it (retained ones of a
        # fresh session): keep reading until it is in, or we would never see it.
        if self.limits.session_present or (
            self._subscribed is not None and self._subscribed.done()
        ):
            self._maybe_pause()

    def _maybe_pause(self) -> None:
        backlog = self.unacked + self._qos0_queued
        if not self.paused and backlog >= self._max_unacked and self._sock is not None:
            self.paused = True
            assert self._loop is not None
            self._loop.remove_reader(self._sock)

    # --- paho callbacks ----------------------------------------------------------------

    def _on_connect(
        self,
        _c: paho.Client,
        _u: object,
        flags: paho.ConnectFlags,
        reason: ReasonCode,
        props: object,
    ) -> None:
        if self._connected is None or self._connected.done():
            return
        if reason.is_failure:
            self._fail_with(refusal(self._broker.url, reason))
            return
        self.limits = BrokerLimits.from_connack(props, session_present=flags.session_present)
        logger.debug("connected to %s: %s", self._broker.url, self.limits.describe())
        if self.limits.maximum_qos < 1:
            self._fail_with(
                BrokerUnsuitable(
                    f"broker {self._broker.url} allows only QoS 0 (Maximum QoS 0 in its CONNACK), "
                    "so it could lose an alarm without telling anyone",
                    "allow QoS 1 on it (Mosquitto: remove 'max_qos 0' from its configuration)",
                )
            )
            return
        # Never more in flight than the broker said it can take (spec 4.9).
        self._window.resize(min(self._max_inflight, self.limits.receive_maximum))
        self._connected.set_result(None)

    def _send_subscribes(self) -> None:
        chunks = [
            self._filters[i : i + FILTERS_PER_SUBSCRIBE]
            for i in range(0, len(self._filters), FILTERS_PER_SUBSCRIBE)
        ]
        if self._stale_filters:
            # No need to wait for the UNSUBACK: the broker handles packets in order.
            self._client.unsubscribe(list(self._stale_filters))
        self._subacks_due = len(chunks)
        self._asked = {}
        for chunk in chunks:
            _, mid = self._client.subscribe([(topic, 1) for topic in chunk])
            if mid is not None:
                self._asked[mid] = list(chunk)

    def _on_subscribe(
        self, _c: paho.Client, _u: object, mid: int, reasons: list[ReasonCode], _p: object
    ) -> None:
        if self._subscribed is None or self._subscribed.done():
            return
        if not reasons:
            self._fail("broker answered a SUBSCRIBE with no reason codes")
            return
        # Name the filter this SUBACK refused (or granted QoS 0 only), not the first one asked.
        answered = list(zip(self._asked.pop(mid, list(self._filters)), reasons, strict=False))
        refused = [(f, r) for f, r in answered if r.is_failure or r.value < 1]
        topic, reason = (refused or answered)[0]
        more = len(self._filters) - 1
        shown = topic + (f" (of {more + 1} filters)" if more else "")
        if any(r.is_failure for r in reasons):
            self._fail(f"broker refused the subscription to {shown}: {reason}")
        elif any(r.value < 1 for r in reasons):
            self._fail_with(
                BrokerUnsuitable(
                    f"broker {self._broker.url} granted only QoS 0 on {shown}, "
                    "so a message could be lost unacknowledged",
                    "allow QoS 1 on it (Mosquitto: remove 'max_qos 0' from its configuration)",
                )
            )
        else:
            self._subacks_due -= 1
            if self._subacks_due == 0:
                self._subscribed.set_result(None)

    def _on_disconnect(
        self, _c: paho.Client, _u: object, _f: object, reason: ReasonCode, _p: object
    ) -> None:
        self._fail(f"disconnected: {reason}")

    def _on_socket_open(self, _c: paho.Client, _u: object, sock: Any) -> None:  # noqa: ANN401 - paho's socket union
        # Called from the executor thread that runs connect().
        assert self._loop is not None
        raw = sock.socket if isinstance(sock, BufferedSocket) else sock
        if isinstance(raw, socket.socket):
            # Alarms are small and urgent: never let Nagle hold one back.
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._loop.call_soon_threadsafe(self._watch_socket, sock)

    def _watch_socket(self, sock: socket.socket | BufferedSocket) -> None:
        assert self._loop is not None
        if self._lost is None or self._lost.done():
            sock.close()  # gave up on this connection while connect() was running
            return
        self._sock = sock
        self._loop.add_reader(sock, self._read)

    def _on_socket_close(self, _c: paho.Client, _u: object, _sock: object) -> None:
        self._drop_socket()

    def _on_socket_register_write(self, _c: paho.Client, _u: object, sock: Any) -> None:  # noqa: ANN401 - paho's socket union
        assert self._loop is not None
        if threading.get_ident() == self._loop_thread:
            self._want_write(sock)
        else:
            self._loop.call_soon_threadsafe(self._want_write, sock)

    def _want_write(self, sock: socket.socket | BufferedSocket) -> None:
        if self._lost is not None and not self._lost.done() and sock.fileno() >= 0:
            assert self._loop is not None
            self._loop.add_writer(sock, self._write)

    def _on_socket_unregister_write(self, _c: paho.Client, _u: object, sock: Any) -> None:  # noqa: ANN401 - paho's socket union
        if self._loop is not None:
            self._loop.remove_writer(sock)

    def _read_once(self) -> None:
        self._last_read = time.monotonic()
        try:
            self._client.loop_read()
        except Exception as exc:  # noqa: BLE001 - as in _read
            self._fail(f"read failed: {exc!r}")

    def _read(self) -> None:
        self._last_read = time.monotonic()
        try:
            for _ in range(READ_BATCH):
                if self._client.loop_read() != paho.MQTT_ERR_SUCCESS or self.paused:
                    return
                if not _more_to_read(self._client.socket()):
                    return
            # Cut at READ_BATCH: select() will report what the kernel still holds, but
            # not what was read into the buffer or decrypted; read that after the loop's turn.
            if _pending(self._client.socket()) and self._loop is not None:
                self._loop.call_soon(self._read)
        except Exception as exc:  # noqa: BLE001 - any failure here means the link is unusable
            self._fail(f"read failed: {exc!r}")

    def _write(self) -> None:
        try:
            self._client.loop_write()
        except Exception as exc:  # noqa: BLE001 - as in _read
            self._fail(f"write failed: {exc!r}")

    def _drop_socket(self) -> None:
        if self._sock is not None and self._loop is not None:
            self._loop.remove_reader(self._sock)
            self._loop.remove_writer(self._sock)
        self._sock = None

    def _fail(self, why: str) -> None:
        self._fail_with(LinkDown(why))

    def _fail_with(self, error: LinkDown) -> None:
        self._drop_socket()
        if self._lost is not None and not self._lost.done():
            self._lost.set_exception(error)
        publishes, self._publishes = self._publishes, {}
        for future in [*(p.future for p in publishes.values()), *self._window.drop_all()]:
            if not future.done():
                future.set_exception(LinkDown(str(error)))
                future.add_done_callback(_retrieve)


def _pending(sock: object) -> bool:
    """Whether bytes were read (by ``BufferedSocket``) or decrypted (by TLS) and not yet taken.

    select() cannot see them.
    """
    pending = getattr(sock, "pending", None)
    return pending is not None and bool(pending())


def _more_to_read(sock: object) -> bool:
    """Whether the socket holds more bytes now (paho reads one packet per call)."""
    if hasattr(sock, "pending"):
        # Buffered or TLS: no peeking at the kernel's bytes under it. Once what it
        # holds is taken, select() tells of more.
        return _pending(sock)
    if not isinstance(sock, socket.socket):
        return False
    try:
        return bool(sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
    except (BlockingIOError, InterruptedError):
        return False


def _retrieve(future: asyncio.Future[None]) -> None:
    """Mark a future's exception as seen: its owner learns of the failure elsewhere."""
    if not future.cancelled():
        future.exception()
