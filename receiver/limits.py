"""How much the centre serves at once and for how long (defaults documented in docs/dc09.md)."""

from __future__ import annotations

MAX_CONNECTIONS = 256
"""TCP connections served at once; more are closed on arrival (memory stays bounded)."""
MAX_PER_SOURCE = 16
"""TCP connections from one address at once: one host cannot take every slot."""
IDLE_TIMEOUT_S = 180.0
"""A TCP connection silent this long is closed. A panel that keeps its connection
sends NULL supervision well within it (the gateway every 60 s by default)."""
KEEPALIVE = {"TCP_KEEPIDLE": 60, "TCP_KEEPINTVL": 10, "TCP_KEEPCNT": 3}
"""TCP keepalive on accepted connections: a peer that vanished (power cut, cable)
is found in about 90 s even while its connection is within the idle timeout."""
