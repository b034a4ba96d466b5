"""An MQTT subscriber that reads its socket only as fast as its messages are acknowledged.

A broker holding a large backlog for our persistent session would otherwise
pour it into memory: Mosquitto 2.0 stops honouring the client's Receive
Maximum for a resumed session once acknowledgements flow. So this subscriber
stops reading its socket while ``max_unacked`` messages are unacknowledged and
resumes at half of that: TCP then holds the rest in the broker, and the
gateway's memory stays flat whatever the backlog.

It drives paho-mqtt through paho's public external-loop API (socket callbacks,
``loop_read``/``loop_write``/``loop_misc``) on the running asyncio loop, with
paho's manual acknowledgements (``ack(mid, qos)``).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode

from gateway.mqtt import BrokerConfig, connect_properties

logger = logging.getLogger(__name__)

MISC_INTERVAL_S = 1.0
CONNECT_TIMEOUT_S = 10.0


class SubscriberDown(ConnectionError):  # noqa: N818 - states the condition, as DriverUnavailable
    """The broker link failed or refused us; the caller backs off and retries."""


class PacedSubscriber:
    """A persistent-session MQTT v5 subscriber with manual acks and TCP backpressure."""

    def __init__(
        self,
        broker: BrokerConfig,
        *,
        client_id: str,
        topic: str,
        max_unacked: int,
        session_expiry_s: int = 7 * 24 * 3600,
    ) -> None:
        """Subscribe to ``topic`` (QoS 1) on ``broker`` as ``client_id`` once run."""
        self._broker = broker
        self._topic = topic
        self._max_unacked = max_unacked
        self._session_expiry_s = session_expiry_s
        # (message, connection generation); at most about ``max_unacked`` long.
        self.messages: asyncio.Queue[tuple[paho.MQTTMessage, int]] = asyncio.Queue()
        self.unacked = 0
        self.paused = False
        self._client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
            manual_ack=True,
            reconnect_on_failure=False,
        )
        if broker.username:
            password = broker.password.get_secret_value() if broker.password else None
            self._client.username_pw_set(broker.username, password)
        if broker.tls is not None:
            self._client.tls_set_context(broker.tls.context())
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._client.on_socket_open = self._on_socket_open
        self._client.on_socket_close = self._on_socket_close
        self._client.on_socket_register_write = self._on_socket_register_write
        self._client.on_socket_unregister_write = self._on_socket_unregister_write
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sock: socket.socket | None = None
        self._connected: asyncio.Future[None] | None = None
        self._subscribed: asyncio.Future[None] | None = None
        self._lost: asyncio.Future[None] | None = None
        self._generation = 0

    async def run(self, on_subscribed: asyncio.Event | None = None) -> None:
        """Connect, subscribe and feed ``messages`` until cancelled; raise ``SubscriberDown``."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._generation += 1
        self.unacked = 0
        self.paused = False
        # Unprocessed messages of a lost connection come again from the broker.
        while not self.messages.empty():
            self.messages.get_nowait()
        self._connected = loop.create_future()
        self._subscribed = loop.create_future()
        self._lost = loop.create_future()
        props = connect_properties(
            session_expiry_s=self._session_expiry_s, receive_maximum=self._max_unacked
        )
        try:
            try:
                await loop.run_in_executor(None, self._connect, props)
            except OSError as exc:
                raise SubscriberDown(str(exc)) from exc
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                await self._first_of(self._connected)
                self._client.subscribe(self._topic, qos=1)
                await self._first_of(self._subscribed)
            if on_subscribed is not None:
                on_subscribed.set()
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._misc(), name="subscriber.misc")
                await self._lost
        except TimeoutError as exc:
            raise SubscriberDown(f"no CONNACK/SUBACK within {CONNECT_TIMEOUT_S:g} s") from exc
        finally:
            self._client.disconnect()
            self._drop_socket()
            if self._lost.done() and not self._lost.cancelled():
                self._lost.exception()  # retrieved: the caller saw the failure already

    def ack(self, message: paho.MQTTMessage, generation: int) -> None:
        """Acknowledge ``message`` (received in connection ``generation``) to the broker."""
        if generation != self._generation or message.qos == 0:
            return  # that connection is gone; the broker will send it again
        self._client.ack(message.mid, message.qos)
        self.unacked -= 1
        if self.paused and self.unacked <= self._max_unacked // 2:
            self.paused = False
            if self._sock is not None and self._loop is not None:
                self._loop.add_reader(self._sock, self._read)

    def _connect(self, props: Any) -> None:  # noqa: ANN401 - paho's Properties
        self._client.connect(
            self._broker.host,
            self._broker.port,
            keepalive=self._broker.keepalive_s,
            clean_start=False,
            properties=props,
        )

    async def _first_of(self, future: asyncio.Future[None]) -> None:
        """Wait for ``future`` unless the link is lost first."""
        assert self._lost is not None
        done, _ = await asyncio.wait({future, self._lost}, return_when=asyncio.FIRST_COMPLETED)
        for fut in done:
            fut.result()

    async def _misc(self) -> None:
        while True:
            if self._client.loop_misc() != paho.MQTT_ERR_SUCCESS:
                self._fail("keep-alive failed")
                return
            await asyncio.sleep(MISC_INTERVAL_S)

    # --- paho callbacks (all on the event loop, except socket open during connect) ---

    def _on_connect(
        self,
        _c: paho.Client,
        _u: object,
        flags: paho.ConnectFlags,
        reason: ReasonCode,
        _p: object,
    ) -> None:
        if self._connected is None or self._connected.done():
            return
        if reason.is_failure:
            self._fail(f"broker refused the connection: {reason}")
        else:
            logger.debug("connected, session present: %s", flags.session_present)
            self._connected.set_result(None)

    def _on_subscribe(
        self,
        _c: paho.Client,
        _u: object,
        _mid: int,
        reasons: list[ReasonCode],
        _p: object,
    ) -> None:
        if self._subscribed is None or self._subscribed.done():
            return
        if any(r.is_failure for r in reasons):
            self._fail(f"broker refused the subscription to {self._topic}: {reasons[0]}")
        else:
            self._subscribed.set_result(None)

    def _on_disconnect(
        self,
        _c: paho.Client,
        _u: object,
        _f: object,
        reason: ReasonCode,
        _p: object,
    ) -> None:
        self._fail(f"disconnected: {reason}")

    def _on_message(self, _c: paho.Client, _u: object, message: paho.MQTTMessage) -> None:
        if message.qos > 0:
            self.unacked += 1
            if not self.paused and self.unacked >= self._max_unacked and self._sock is not None:
                self.paused = True
                assert self._loop is not None
                self._loop.remove_reader(self._sock)
        self.messages.put_nowait((message, self._generation))

    def _on_socket_open(self, _c: paho.Client, _u: object, sock: Any) -> None:  # noqa: ANN401
        # Called from the executor thread that runs connect().
        assert self._loop is not None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._loop.call_soon_threadsafe(self._watch, sock)

    def _watch(self, sock: socket.socket) -> None:
        assert self._loop is not None
        self._sock = sock
        self._loop.add_reader(sock, self._read)

    def _on_socket_close(self, _c: paho.Client, _u: object, _sock: Any) -> None:  # noqa: ANN401
        self._drop_socket()

    def _on_socket_register_write(self, _c: paho.Client, _u: object, sock: Any) -> None:  # noqa: ANN401
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._loop.add_writer, sock, self._write)

    def _on_socket_unregister_write(self, _c: paho.Client, _u: object, sock: Any) -> None:  # noqa: ANN401
        if self._loop is not None:
            self._loop.remove_writer(sock)

    def _read(self) -> None:
        try:
            # TLS may hold decoded bytes that select() cannot see.
            while self._client.loop_read() == paho.MQTT_ERR_SUCCESS and not self.paused:
                pending = getattr(self._client.socket(), "pending", None)
                if pending is None or pending() == 0:
                    break
        except OSError as exc:
            self._fail(f"read failed: {exc}")

    def _write(self) -> None:
        try:
            self._client.loop_write()
        except OSError as exc:
            self._fail(f"write failed: {exc}")

    def _drop_socket(self) -> None:
        if self._sock is not None and self._loop is not None:
            self._loop.remove_reader(self._sock)
            self._loop.remove_writer(self._sock)
        self._sock = None

    def _fail(self, why: str) -> None:
        self._drop_socket()
        if self._lost is not None and not self._lost.done():
            self._lost.set_exception(SubscriberDown(why))
