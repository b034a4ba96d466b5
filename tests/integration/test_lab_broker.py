"""The tests' own Mosquitto: a port taken between its pick and the broker's bind."""

from __future__ import annotations

import socket

import pytest

from lab.broker import Mosquitto, PortTakenError


def _hold(port: int) -> socket.socket:
    holder = socket.socket()
    holder.bind(("127.0.0.1", port))
    holder.listen()
    return holder


def test_a_picked_port_taken_before_the_start_is_picked_again():
    """Another worker's broker took the port this one was given: the first start picks another."""
    broker = Mosquitto()
    taken = broker.port
    with _hold(taken), broker:
        assert broker.port != taken
        socket.create_connection(("127.0.0.1", broker.port), timeout=2).close()


def test_a_port_asked_for_is_never_swapped():
    """A broker told its port (or restarted on it) fails, naming the port, rather than move."""
    probe = Mosquitto()
    with _hold(probe.port), pytest.raises(PortTakenError, match=f"port {probe.port}"):
        Mosquitto(port=probe.port, workdir=probe.workdir).start()
    probe.close()
