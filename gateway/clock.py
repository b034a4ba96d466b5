"""The gateway's judgement of its own wall clock, and the police's time when ours is wrong.

A Pi has no battery-backed clock: after a power cut it runs on the time it last
saved (or 1970) until NTP synchronises it, which on a block without internet
may be never. A clock hours behind sends neighbour notices that are already
expired and refuses every signed police command as not yet valid.

The clock is suspect when it reads a day before the installed version was
released, when NTP says it is not synchronised, or when it is more than
``MAX_OFFSET_S`` from a time the police or an alarm centre told the gateway.
Told times are kept against the monotonic clock, so they stay right when NTP
steps the wall clock, and the clock is judged good again once it agrees.
While the gateway knows the police's time and its own is off, ``now()`` gives
the police's time: the expiry of signed commands and of notices uses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
import shutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from gateway import RELEASE_DATE
from gateway.events import utc_now

logger = logging.getLogger(__name__)

CHECK_EVERY_S = 300.0
"""How often the clock is judged again (and at once whenever a time is told)."""
MAX_OFFSET_S = 60.0
"""A clock further than this from a told time is suspect, and the told time is used."""
TIMEDATECTL_TIMEOUT_S = 5.0
# adjtimex(2) answers TIME_ERROR (5) while the kernel marks the clock unsynchronised.
TIME_ERROR = 5
# struct timex is 208 bytes on 64-bit Linux; room to spare for any ABI. All zero = read only.
TIMEX_BUFFER = 512

NtpProbe = Callable[[], Awaitable[bool | None]]
"""Whether NTP has synchronised the clock: True, False, or None when nothing can tell."""


@dataclass(frozen=True, slots=True)
class ClockJudgement:
    """What the gateway thinks of its clock; ``reasons`` is empty when it is trusted."""

    reasons: tuple[str, ...] = ()
    offset_s: float | None = None
    """The told time minus ours, s (positive: ours is behind); None when never told."""
    told_by: str | None = None
    ntp_synchronised: bool | None = None

    @property
    def suspect(self) -> bool:
        """Whether the clock is not to be trusted."""
        return bool(self.reasons)

    def attrs(self) -> dict[str, Any]:
        """The judgement as event attributes and status fields."""
        return {
            "suspect": self.suspect,
            "reasons": list(self.reasons),
            "offset_s": None if self.offset_s is None else round(self.offset_s, 1),
            "told_by": self.told_by,
            "ntp_synchronised": self.ntp_synchronised,
        }


@dataclass(frozen=True, slots=True)
class _Told:
    at: datetime
    monotonic: float
    by: str


class GatewayClock:
    """Judges the wall clock and gives the best time the gateway knows."""

    def __init__(
        self,
        *,
        released: date = RELEASE_DATE,
        ntp: NtpProbe | None = None,
        wall: Callable[[], datetime] = utc_now,
        monotonic: Callable[[], float] = time.monotonic,
        check_every_s: float = CHECK_EVERY_S,
    ) -> None:
        """Judge against ``released`` and ``ntp`` (default: timedatectl, else adjtimex)."""
        self._released = released
        self._ntp = ntp or ntp_synchronised
        self._wall = wall
        self._monotonic = monotonic
        self._check_every_s = check_every_s
        self._exact: _Told | None = None
        self._floor: _Told | None = None
        self._told_event = asyncio.Event()
        self.judgement = ClockJudgement()
        self.on_change: Callable[[ClockJudgement], Awaitable[None]] | None = None
        """Called when the clock turns suspect, and when it is good again."""

    def told(self, at: datetime, *, by: str, exact: bool) -> None:
        """Learn the time from ``by``: ``exact`` (an alarm centre's reply) or at least ``at``.

        A signed command's issue time is only a floor: a command can wait in a
        queue, and an old one can be replayed, but only the police key makes
        one dated ahead of now.
        """
        told = _Told(at, self._monotonic(), by)
        if exact:
            self._exact = told
        elif self._floor is None or self._projected(told) > self._projected(self._floor):
            self._floor = told
        self._told_event.set()

    def offset_s(self) -> tuple[float, str] | None:
        """The best told time minus ours (s) and who told it; None when never told."""
        told = self._exact
        if self._floor is not None and (
            told is None or self._projected(self._floor) > self._projected(told)
        ):
            told = self._floor
        if told is None:
            return None
        offset = (self._projected(told) - self._wall()).total_seconds()
        if told is self._floor:
            offset = max(offset, 0.0)  # a floor behind our clock says nothing against it
        return offset, told.by

    def now(self) -> datetime:
        """Our wall clock, or the told time when ours is more than ``MAX_OFFSET_S`` from it."""
        found = self.offset_s()
        if found is None or abs(found[0]) <= MAX_OFFSET_S:
            return self._wall()
        return self._wall() + timedelta(seconds=found[0])

    async def judge(self) -> ClockJudgement:
        """Judge the clock now (asks NTP, so it may take a few seconds)."""
        ntp = await self._ntp()
        reasons = []
        wall = self._wall()
        if wall.date() < self._released:
            reasons.append(
                f"reads {wall:%Y-%m-%d}, before this version's release ({self._released})"
            )
        if ntp is False:
            reasons.append("NTP has not synchronised the clock")
        found = self.offset_s()
        if found is not None and abs(found[0]) > MAX_OFFSET_S:
            way = "behind" if found[0] > 0 else "ahead of"
            reasons.append(f"{abs(found[0]):.0f} s {way} the time the {found[1]} gave")
        return ClockJudgement(
            tuple(reasons),
            None if found is None else found[0],
            None if found is None else found[1],
            ntp,
        )

    async def run(self) -> None:
        """Judge at start, every ``check_every_s`` and whenever told a time; report each turn."""
        while True:
            self._told_event.clear()
            judgement = await self.judge()
            previous, self.judgement = self.judgement, judgement
            if judgement.suspect != previous.suspect:
                if judgement.suspect:
                    logger.warning("clock suspect: %s", "; ".join(judgement.reasons))
                else:
                    logger.info("clock good again")
                if self.on_change is not None:
                    await self.on_change(judgement)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._check_every_s):
                    await self._told_event.wait()

    def _projected(self, told: _Told) -> datetime:
        return told.at + timedelta(seconds=self._monotonic() - told.monotonic)


async def ntp_synchronised() -> bool | None:
    """NTP's word on the clock: systemd's where it has timedatectl, else the kernel's.

    Where timedatectl exists but cannot reach timedated (no systemd running),
    the answer is unknown: the kernel's flag is read only on machines without
    systemd, since a kernel no NTP daemon disciplines (a container, a VM) says
    unsynchronised whatever its clock.
    """
    timedatectl = shutil.which("timedatectl")
    if timedatectl is None:
        return kernel_synchronised()
    try:
        process = await asyncio.create_subprocess_exec(
            timedatectl,
            "show",
            "--property=NTPSynchronized",
            "--value",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
    except OSError:
        return None
    try:
        async with asyncio.timeout(TIMEDATECTL_TIMEOUT_S):
            out, _ = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        return None
    if process.returncode != 0:
        return None
    return {b"yes": True, b"no": False}.get(out.strip())


def kernel_synchronised() -> bool | None:
    """The kernel's flag through a read-only adjtimex(2); None where there is no such call."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        adjtimex = getattr(ctypes.CDLL(name, use_errno=True), "adjtimex", None)
    except OSError:
        return None
    if adjtimex is None:
        return None
    state = adjtimex(ctypes.create_string_buffer(TIMEX_BUFFER))
    if not isinstance(state, int) or state < 0:
        return None
    return state != TIME_ERROR
