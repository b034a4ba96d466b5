"""Nonces of signed messages (police commands, mesh notices): each is accepted once.

A nonce needs remembering only while its message could still be accepted: older
ones are refused as expired anyway, so the memory is bounded by the validity
window (and by ``MAX_NONCES`` against a flood inside it).
"""

from __future__ import annotations

from collections import OrderedDict
from datetime import datetime, timedelta

# The same leeway both ways: a clock a minute fast must not refuse every signed message.
CLOCK_SKEW = timedelta(minutes=2)
MAX_NONCES = 100_000


class UsedNonces:
    """The nonces used within the last ``max_age`` (plus ``CLOCK_SKEW``), oldest first."""

    def __init__(self, max_age: timedelta) -> None:
        """Remember nonces for ``max_age``: the longest a signed message stays valid."""
        self._max_age = max_age
        self._issued: OrderedDict[str, datetime] = OrderedDict()

    def remember(self, nonce: str, issued_at: datetime) -> None:
        """Count ``nonce`` as used (also for nonces kept across a restart)."""
        self._issued[nonce] = issued_at
        while len(self._issued) > MAX_NONCES:
            self._issued.popitem(last=False)

    def used(self, nonce: str, now: datetime) -> bool:
        """Whether ``nonce`` was used before; forgets those too old to matter at ``now``."""
        oldest = now - self._max_age - CLOCK_SKEW
        while self._issued and next(iter(self._issued.values())) < oldest:
            self._issued.popitem(last=False)
        return nonce in self._issued

    def issued(self) -> dict[str, datetime]:
        """Nonces still remembered, with their issue times (to keep across a restart)."""
        return dict(self._issued)
