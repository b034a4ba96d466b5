"""paho's Client for the gateway's links, with paho's per-packet costs cut on the hot path.

Issue 14's backlog drain is bound by the event loop's thread, and a third of it
went to paho receiving packets. For each PUBLISH and PUBACK paho's decoder
builds a ``Properties`` object (and for a PUBACK a ``ReasonCode``), each filled
with tables of every property name and code, whether the packet has properties
or not; and it reads each packet in three or more ``recv`` calls (the first
byte, the remaining length byte by byte, the body). Measured on the bench
machine: 38 us of CPU per received PUBLISH through ``loop_read``, 13 us
without the ``Properties``, 10 us reading from a buffer as well.

``LeanClient`` therefore:

- decodes a PUBLISH (QoS 0 or 1, MQTT v5, no properties, a topic) and a PUBACK
  (success, no reason code, as Mosquitto sends it) itself, and hands them on as
  paho does: the same callbacks, in the same order, with the same message fields
  (a PUBLISH's ``properties`` is None: it had none). Any other packet, or one
  with properties or a reason code, goes to paho's own code.
- reads its socket through ``BufferedSocket``: one ``recv`` of up to
  ``READ_CHUNK`` bytes serves paho's small reads. Bytes it holds are out of the
  kernel, where ``select`` cannot see them: like ``ssl.SSLSocket`` it counts
  them in ``pending()``, which ``MqttLink``'s reader and paho's own loop ask.

Both rely on paho's internals (``_in_packet``, ``_handle_on_message``,
``_do_on_publish``, ``_out_messages``, ``_create_socket``), so ``link_client``
uses ``LeanClient`` only with the paho releases it was checked against
(``CHECKED_PAHO``); with any other the link runs on paho's own ``Client``,
slower but whole. ``tests/integration/test_lean_client.py`` holds the decoding to
paho's on the installed release.
"""

from __future__ import annotations

import socket
import ssl
import time
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt import __version__ as paho_version
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

__all__ = ["CHECKED_PAHO", "READ_CHUNK", "BufferedSocket", "LeanClient", "lean_fits", "link_client"]

# paho releases whose internals LeanClient was checked against (see the module docstring).
CHECKED_PAHO = ("2.2.",)
# Bytes taken from the kernel per read: hundreds of small packets, and TLS's
# largest record (16 KiB) several times over.
READ_CHUNK = 64 * 1024
QOS_BITS = 0x06
DUP_BIT = 0x08
RETAIN_BIT = 0x01
# Handed to every successful PUBACK's callback; never changed (paho's own are new each time).
PUBACK_SUCCESS = ReasonCode(PacketTypes.PUBACK)
NO_PROPERTIES = Properties(PacketTypes.PUBACK)  # type: ignore[no-untyped-call]


class BufferedSocket:
    """A socket read in chunks: one ``recv`` of up to ``READ_CHUNK`` bytes serves many small ones.

    Everything but reading goes straight to the socket (TCP or TLS) underneath.
    """

    def __init__(self, sock: socket.socket) -> None:
        """Wrap ``sock`` (non-blocking, as paho sets it once connected)."""
        self.socket = sock
        self._chunk = b""
        self._at = 0

    def recv(self, size: int) -> bytes:
        """Up to ``size`` bytes: from the chunk held, else from a new one read now.

        Raises what the socket's ``recv`` raises (``BlockingIOError``,
        ``ssl.SSLWantReadError``) when it has nothing; b"" at the end of the stream.
        """
        if self._at >= len(self._chunk):
            chunk = self.socket.recv(READ_CHUNK)
            if not chunk:
                return chunk
            self._chunk, self._at = chunk, 0
        start = self._at
        self._at = start + size
        return self._chunk[start : self._at]

    def pending(self) -> int:
        """Bytes read (or decrypted) and not yet taken: ``select`` cannot see them.

        As ``ssl.SSLSocket.pending``, which readers of TLS sockets ask already.
        """
        held = max(len(self._chunk) - self._at, 0)
        if isinstance(self.socket, ssl.SSLSocket):
            held += self.socket.pending()
        return held

    def send(self, data: bytes | bytearray | memoryview) -> int:
        """Write what the socket takes now."""
        return self.socket.send(data)

    def setblocking(self, flag: bool) -> None:
        """As ``socket.setblocking``."""
        self.socket.setblocking(flag)

    def fileno(self) -> int:
        """The socket's descriptor (-1 once closed), for the event loop's selector."""
        return self.socket.fileno()

    def close(self) -> None:
        """Close the socket; what was read and not taken goes with it."""
        self._chunk, self._at = b"", 0
        self.socket.close()


class LeanClient(paho.Client):
    """paho's Client, decoding the common PUBLISH and PUBACK itself and reading in chunks."""

    def _create_socket(self) -> Any:  # noqa: ANN401 - paho's socket union
        sock = super()._create_socket()
        return BufferedSocket(sock) if isinstance(sock, socket.socket) else sock

    def _handle_publish(self) -> MQTTErrorCode:
        header: int = self._in_packet["command"]
        packet: bytearray = self._in_packet["packet"]
        qos = (header & QOS_BITS) >> 1
        if qos > 1 or self._protocol != MQTTProtocolVersion.MQTTv5 or len(packet) < 2:
            return super()._handle_publish()
        topic_end = 2 + ((packet[0] << 8) | packet[1])
        properties_at = topic_end + 2 * qos  # after the packet id, if any
        if topic_end == 2 or len(packet) <= properties_at or packet[properties_at] != 0:
            # No topic (a topic alias), too short, or properties: paho decodes it.
            return super()._handle_publish()
        message = paho.MQTTMessage(
            mid=(packet[topic_end] << 8) | packet[topic_end + 1] if qos else 0,
            topic=bytes(packet[2:topic_end]),
        )
        message.dup = bool(header & DUP_BIT)
        message.qos = qos
        message.retain = bool(header & RETAIN_BIT)
        message.payload = bytes(packet[properties_at + 1 :])
        message.timestamp = time.monotonic()
        self._handle_on_message(message)
        if qos and not self._manual_ack:
            return self._send_puback(message.mid)
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def _handle_pubackcomp(self, cmd: Any) -> MQTTErrorCode:  # noqa: ANN401 - paho's Literal
        packet: bytearray = self._in_packet["packet"]
        if cmd != "PUBACK" or self._protocol != MQTTProtocolVersion.MQTTv5 or len(packet) != 2:
            return super()._handle_pubackcomp(cmd)
        mid = (packet[0] << 8) | packet[1]
        with self._out_message_mutex:
            if mid in self._out_messages:
                return self._do_on_publish(mid, PUBACK_SUCCESS, NO_PROPERTIES)
        return MQTTErrorCode.MQTT_ERR_SUCCESS


def lean_fits(version: str = paho_version) -> bool:
    """Whether ``LeanClient`` was checked against this paho release."""
    return version.startswith(CHECKED_PAHO)


def link_client(client_id: str) -> paho.Client:
    """A paho client for one link: MQTT v5, callback API 2, manual acks, no reconnects of its own.

    A ``LeanClient`` when the installed paho is one it was checked against.
    """
    kind = LeanClient if lean_fits() else paho.Client
    return kind(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=MQTTProtocolVersion.MQTTv5,
        manual_ack=True,
        reconnect_on_failure=False,
    )
