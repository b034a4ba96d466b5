"""aiomqtt clients for the stubs, tests and benchmarks, from the gateway's broker settings."""

from __future__ import annotations

import argparse
import socket
from typing import Any

import aiomqtt

from gateway.mqtt.client import BrokerConfig, connect_properties


def client_for(
    broker: BrokerConfig,
    *,
    client_id: str,
    persistent: bool,
    will: aiomqtt.Will | None = None,
    session_expiry_s: int = 7 * 24 * 3600,
    max_inflight: int = 20,
    receive_maximum: int = 1000,
) -> aiomqtt.Client:
    """An MQTT v5 client for ``broker``; a persistent session survives our restarts."""
    kwargs: dict[str, Any] = {}
    if broker.tls is not None:
        kwargs["tls_context"] = broker.tls.context()
    client = aiomqtt.Client(
        broker.host,
        broker.port,
        identifier=client_id,
        username=broker.username,
        password=broker.secret(),
        protocol=aiomqtt.ProtocolVersion.V5,
        clean_start=False if persistent else True,  # noqa: SIM211 - paho wants a bool or enum here
        properties=connect_properties(
            session_expiry_s=session_expiry_s if persistent else 0,
            receive_maximum=receive_maximum,
        ),
        keepalive=broker.keepalive_s,
        will=will,
        max_inflight_messages=max_inflight,
        max_queued_incoming_messages=0,
        timeout=10,
        # Alarms are small and urgent: never let Nagle hold one back.
        socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        **kwargs,
    )
    # We bound in-flight publishes ourselves (forwarder window, alert fan-out).
    client.pending_calls_threshold = 100_000
    return client


def device_stub_arguments(description: str | None, *, client_id: str) -> argparse.ArgumentParser:
    """The command line every MQTT device stub starts from: broker, client id, control port."""
    ap = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawTextHelpFormatter
    )
    ap.add_argument("--broker", default="mqtt://127.0.0.1:1883", help="broker URL")
    ap.add_argument("--client-id", default=client_id, help=f"MQTT client id (default {client_id})")
    ap.add_argument("--control", metavar="HOST:PORT", help="also take commands on this TCP port")
    return ap
