"""What an MQTT 5 broker announces when it accepts us, and the refusals we put in words.

``BrokerLimits`` reads a CONNACK's properties (spec 3.2.2.3) so that ``MqttLink``
can honour them; ``refusal`` turns a refused CONNECT into one sentence that says
what to change; ``publish_packet_size`` counts a PUBLISH as the broker does,
to check it against the broker's Maximum Packet Size before sending.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from paho.mqtt.reasoncodes import ReasonCode

from gateway.errors import PlatformNak

# MQTT 5 reason codes we act on (spec 2.4).
RC_UNSUPPORTED_PROTOCOL = 0x84
RC_RETAIN_NOT_SUPPORTED = 0x9A
RC_QOS_NOT_SUPPORTED = 0x9B
RC_PACKET_TOO_LARGE = 0x95
# Receive Maximum when the CONNACK does not say (spec 3.2.2.3.3).
UNLIMITED_RECEIVE_MAXIMUM = 65_535


class LinkDown(ConnectionError):  # noqa: N818 - states the condition, as DriverUnavailable
    """The broker link failed or refused us; the caller backs off and retries."""


class BrokerUnsuitable(LinkDown):
    """The broker answered, but cannot carry alarms as configured; ``advice`` says what to change.

    Retrying does not help until the broker's configuration changes, but the
    caller still retries (with backoff): the installer may fix it while we run.
    """

    def __init__(self, message: str, advice: str) -> None:
        """Keep what to change apart from what is wrong."""
        super().__init__(f"{message}; {advice}")
        self.advice = advice


class PacketTooLarge(PlatformNak):
    """A message is bigger than the broker's Maximum Packet Size: it can never be sent there."""

    @classmethod
    def for_message(cls, topic: str, payload: bytes, limit: int | None) -> PacketTooLarge:
        """The refusal of ``payload`` to ``topic`` by a broker whose limit is ``limit`` bytes."""
        return cls(
            f"a {publish_packet_size(topic, payload)}-byte message to {topic} exceeds "
            f"the broker's maximum packet size of {limit} bytes",
            code=RC_PACKET_TOO_LARGE,
        )


@dataclass(frozen=True)
class BrokerLimits:
    """What a broker announced in its CONNACK (MQTT 5, spec 3.2.2.3), for us to honour."""

    receive_maximum: int = UNLIMITED_RECEIVE_MAXIMUM
    maximum_packet_size: int | None = None
    topic_alias_maximum: int = 0
    server_keep_alive: int | None = None
    retain_available: bool = True
    maximum_qos: int = 2
    assigned_client_id: str | None = None
    session_present: bool = False

    @classmethod
    def from_connack(cls, props: object, *, session_present: bool) -> BrokerLimits:
        """Read the CONNACK properties paho decoded; absent ones take the spec's defaults."""

        def read(name: str) -> Any:  # noqa: ANN401 - paho's properties are untyped
            return getattr(props, name, None)

        return cls(
            receive_maximum=read("ReceiveMaximum") or UNLIMITED_RECEIVE_MAXIMUM,
            maximum_packet_size=read("MaximumPacketSize"),
            topic_alias_maximum=read("TopicAliasMaximum") or 0,
            server_keep_alive=read("ServerKeepAlive"),
            retain_available=read("RetainAvailable") != 0,
            maximum_qos=2 if read("MaximumQoS") is None else read("MaximumQoS"),
            assigned_client_id=read("AssignedClientIdentifier"),
            session_present=session_present,
        )

    def describe(self) -> str:
        """One line for ``lianfang check --online`` and the logs."""
        size = f"{self.maximum_packet_size} B" if self.maximum_packet_size else "unlimited"
        keep = f"{self.server_keep_alive} s" if self.server_keep_alive is not None else "as asked"
        return (
            f"receive maximum {self.receive_maximum}, maximum packet size {size}, "
            f"maximum QoS {self.maximum_qos}, retain {'yes' if self.retain_available else 'no'}, "
            f"topic aliases {self.topic_alias_maximum}, keep-alive {keep}"
        )


def publish_packet_size(topic: str, payload: bytes) -> int:
    """Bytes of a QoS 1 PUBLISH without properties, as the broker counts them (spec 3.3)."""
    remaining = 2 + len(topic.encode()) + 2 + 1 + len(payload)
    header = 1
    length = remaining
    while True:
        header += 1
        length //= 128
        if length == 0:
            return header + remaining


RETAIN_ADVICE = "connect without a retained will"


def refusal(url: str, reason: ReasonCode) -> LinkDown:
    """Why a broker refused our CONNECT, saying what to change where we can tell."""
    if reason.value == RC_UNSUPPORTED_PROTOCOL:
        return BrokerUnsuitable(
            f"broker {url} speaks only MQTT 3.1.1 or older, and Lianfang needs MQTT 5: "
            "a 3.1.1 PUBACK cannot say that an alarm was refused",
            "enable MQTT 5 on that broker or use one that has it "
            "(Mosquitto 1.6 or later, EMQX, HiveMQ, VerneMQ)",
        )
    if reason.value == RC_RETAIN_NOT_SUPPORTED:
        return BrokerUnsuitable(f"broker {url} does not support retained messages", RETAIN_ADVICE)
    if reason.value == RC_QOS_NOT_SUPPORTED:
        return BrokerUnsuitable(
            f"broker {url} refused our will's QoS 1",
            "allow QoS 1 on it (Mosquitto: remove 'max_qos 0' from its configuration)",
        )
    return LinkDown(f"broker refused the connection: {reason}")
