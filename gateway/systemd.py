"""The systemd notify protocol (``sd_notify``): readiness, status and watchdog.

A no-op when the gateway does not run under systemd (no ``$NOTIFY_SOCKET``).
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from pathlib import Path


class SystemdNotifier:
    """Sends ``READY=1``, ``STATUS=...``, ``WATCHDOG=1`` and ``STOPPING=1`` to systemd."""

    def __init__(self) -> None:
        """Connect to ``$NOTIFY_SOCKET`` if systemd gave one."""
        address = os.environ.get("NOTIFY_SOCKET", "")
        self._sock: socket.socket | None = None
        if address:
            if address.startswith("@"):  # abstract namespace socket
                address = "\0" + address[1:]
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sock.connect(address)
        usec = os.environ.get("WATCHDOG_USEC", "")
        self.watchdog_interval_s = int(usec) / 2e6 if usec.isdigit() and int(usec) else None

    def notify(self, message: str) -> None:
        """Send ``message``; dropped silently when systemd is not listening."""
        if self._sock is not None:
            try:
                self._sock.send(message.encode())
            except OSError:
                self._sock = None

    def close(self) -> None:
        """Close the socket."""
        if self._sock is not None:
            self._sock.close()


async def pet_watchdog(notifier: SystemdNotifier) -> None:
    """Send ``WATCHDOG=1`` every half watchdog interval until cancelled (none without one).

    The pings come from the event loop itself, so a loop that stalls stops them
    and systemd restarts the gateway.
    """
    if notifier.watchdog_interval_s is None:
        return
    while True:
        notifier.notify("WATCHDOG=1")
        await asyncio.sleep(notifier.watchdog_interval_s)


def process_age_s() -> float | None:
    """Seconds since this process started (Linux), or None where that cannot be read."""
    try:
        stat = Path("/proc/self/stat").read_text()
        # Field 22 (starttime, in clock ticks after boot); the command name may hold spaces.
        start_ticks = int(stat.rsplit(")", 1)[1].split()[19])
        return time.clock_gettime(time.CLOCK_BOOTTIME) - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return None
