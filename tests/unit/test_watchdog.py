"""The systemd watchdog: ``WATCHDOG=1`` reaches ``$NOTIFY_SOCKET`` and stops while the loop is blocked.

A real unix datagram socket stands in for systemd; a thread records when each
datagram arrives, so a blocked event loop shows as a gap in the pings.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.systemd import SystemdNotifier, pet_watchdog
from tests.clients import wait_until
from tests.harness import init_config

WATCHDOG_USEC = 100_000
"""systemd's WatchdogSec as the service sees it; the gateway pings every half of it."""
PING_S = WATCHDOG_USEC / 2e6


class FakeSystemd:
    """A unix datagram socket that records every notification and when it came."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.received: list[tuple[float, str]] = []
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(path))
        self._sock.settimeout(0.05)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._listen, name="fake-systemd", daemon=True)
        self._thread.start()

    def _listen(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                message = self._sock.recv(4096).decode()
                self.received.append((time.monotonic(), message))

    def pings(self) -> list[float]:
        return [at for at, message in list(self.received) if "WATCHDOG=1" in message.split("\n")]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()


@pytest.fixture
def systemd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSystemd]:
    listener = FakeSystemd(tmp_path / "notify.sock")
    monkeypatch.setenv("NOTIFY_SOCKET", str(listener.path))
    monkeypatch.setenv("WATCHDOG_USEC", str(WATCHDOG_USEC))
    yield listener
    listener.close()


def test_pings_reach_the_socket_every_half_interval_and_stop_while_the_loop_is_blocked(systemd):
    notifier = SystemdNotifier()
    assert notifier.watchdog_interval_s == PING_S

    async def scenario() -> tuple[float, float]:
        pinging = asyncio.create_task(pet_watchdog(notifier), name="watchdog")
        await wait_until(lambda: len(systemd.pings()) >= 5, 10, "five pings")
        blocked_at = time.monotonic()
        time.sleep(1.0)  # noqa: ASYNC251 - the point: a loop stuck in blocking code
        unblocked_at = time.monotonic()
        before = len(systemd.pings())
        await wait_until(lambda: len(systemd.pings()) >= before + 5, 10, "pings again")
        pinging.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pinging
        return blocked_at, unblocked_at

    blocked_at, unblocked_at = asyncio.run(scenario())
    notifier.close()
    pings = systemd.pings()
    # The ping sent just before the block may land a moment into it; none later.
    during = [at for at in pings if blocked_at + 0.2 < at < unblocked_at]
    assert during == []
    gaps = [b - a for a, b in itertools.pairwise(pings)]
    assert max(gaps) >= 0.8  # the blocked second
    assert sorted(gaps)[-2] < 0.5  # every other gap about PING_S


def test_without_a_watchdog_interval_nothing_is_sent(systemd, monkeypatch):
    monkeypatch.delenv("WATCHDOG_USEC")
    notifier = SystemdNotifier()
    asyncio.run(asyncio.wait_for(pet_watchdog(notifier), 5))
    notifier.close()
    assert systemd.pings() == []


def test_the_real_gateway_pings_and_a_stopped_one_does_not(
    tmp_path, systemd, block_broker, police_broker
):
    config = init_config(tmp_path, block_url=block_broker.url, police_url=police_broker.url)
    with (tmp_path / "gateway.log").open("ab") as log:
        gateway = subprocess.Popen(  # the daemon as systemd starts it, with our socket
            [sys.executable, "-m", "gateway", "run", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    try:

        async def scenario() -> None:
            await wait_until(
                lambda: any("READY=1" in m.split("\n") for _, m in systemd.received),
                20,
                "READY=1",
            )
            before = len(systemd.pings())
            await wait_until(lambda: len(systemd.pings()) >= before + 5, 10, "pings")
            # SIGSTOP: nothing in the process runs, as in a loop stuck for good.
            gateway.send_signal(signal.SIGSTOP)
            stopped_at = time.monotonic()
            await asyncio.sleep(1.0)  # the stall being staged, not a wait for anything
            during = [at for at in systemd.pings() if at > stopped_at + 0.2]
            gateway.send_signal(signal.SIGCONT)
            assert during == []
            resumed = len(systemd.pings())
            await wait_until(lambda: len(systemd.pings()) >= resumed + 3, 10, "pings resumed")

        asyncio.run(scenario())
    finally:
        gateway.kill()
        gateway.wait(timeout=10)
