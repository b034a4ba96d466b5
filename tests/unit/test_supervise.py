"""The supervisor: jittered backoff within its bounds, logs once down and once recovered, fast alarm links."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

import pytest

from gateway.errors import PlatformUnreachable
from gateway.supervise import URGENT_RETRY_S, Backoff, supervise
from tests.clients import wait_until

NAME = "forwarder[police]"


class Recorder:
    """A jitter source that records each ceiling it is asked for and answers ``pick(hi)``."""

    def __init__(self, pick=lambda _hi: 0.0) -> None:
        self.ceilings: list[float] = []
        self._pick = pick

    def __call__(self, lo: float, hi: float) -> float:
        assert lo == 0
        self.ceilings.append(hi)
        return self._pick(hi)


class FlakyLink:
    """A component that follows a plan, one step per run: ``fail`` at once, or come ``up``.

    An ``up`` run stays up until the test sets ``drop``; past the plan it stays up.
    """

    def __init__(self, plan: list[str]) -> None:
        self.link_up = asyncio.Event()
        self.plan = plan
        self.runs = 0
        self.drop = asyncio.Event()

    async def run(self) -> None:
        self.runs += 1
        step = self.plan[self.runs - 1] if self.runs <= len(self.plan) else "stay"
        if step == "fail":
            raise PlatformUnreachable(f"police broker: refused (run {self.runs})")
        self.link_up.set()
        if step == "stay":
            await asyncio.Future()
        await self.drop.wait()
        self.drop.clear()
        raise PlatformUnreachable("police broker: connection lost")


class Alarms:
    """An ``Urgency`` the test drives: whether alarms wait, and a new alarm's arrival."""

    def __init__(self, *, waiting: bool) -> None:
        self.waiting = waiting
        self.arrived = asyncio.Event()

    def alarms_waiting(self) -> bool:
        return self.waiting

    async def alarm_arrived(self) -> None:
        self.arrived.clear()
        await self.arrived.wait()


def test_each_delay_is_jittered_between_zero_and_a_doubling_ceiling_up_to_the_cap():
    recorder = Recorder()
    backoff = Backoff(0.5, 60, uniform=recorder)
    for _ in range(10):
        backoff.delay()
    assert recorder.ceilings == [0.5, 1, 2, 4, 8, 16, 32, 60, 60, 60]


def test_real_jitter_stays_inside_the_bounds_and_spreads_over_them():
    backoff = Backoff(0.5, 4)
    ceilings = [0.5, 1, 2, 4] + [4] * 396
    delays = [backoff.delay() for _ in ceilings]
    assert all(0 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    capped = delays[4:]
    # Full jitter: spread over the whole range, not bunched at the ceiling.
    assert min(capped) < 0.4
    assert max(capped) > 3.6


def test_a_limit_caps_the_delay_but_not_the_growth():
    recorder = Recorder()
    backoff = Backoff(0.5, 60, uniform=recorder)
    for _ in range(8):
        backoff.delay(1.5)
    assert recorder.ceilings == [0.5, 1, 1.5, 1.5, 1.5, 1.5, 1.5, 1.5]
    assert backoff.ceiling() == 60


@contextlib.asynccontextmanager
async def supervised(link: FlakyLink, **kwargs) -> AsyncIterator[None]:
    """``supervise`` the link for the block's duration; it ends only by being cancelled."""
    task = asyncio.create_task(supervise(NAME, link.run, link=link, **kwargs), name="supervised")
    try:
        yield
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def test_logs_once_down_and_once_recovered_over_many_failed_retries(caplog):
    caplog.set_level(logging.INFO, logger="gateway.supervise")
    link = FlakyLink(["fail"] * 6 + ["up"] + ["fail"] * 4)
    changes: list[tuple[bool, str]] = []
    retries: list[str] = []

    async def on_change(name: str, *, up: bool, detail: str) -> None:
        assert name == NAME
        changes.append((up, detail))

    async def scenario() -> None:
        async with supervised(
            link,
            on_change=on_change,
            on_retry=lambda _name, error: retries.append(error),
            base_delay=0.001,
            max_delay=0.01,
        ):
            await wait_until(lambda: len(changes) == 2, 5, "the first recovery told")
            link.drop.set()
            await wait_until(lambda: len(changes) == 4, 5, "the second recovery told")

    asyncio.run(scenario())
    assert link.runs == 12
    lost = "police broker: connection lost"
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", f"{NAME} down: police broker: refused (run 1); retrying with backoff"),
        ("INFO", f"{NAME} recovered"),
        ("WARNING", f"{NAME} down: {lost}; retrying with backoff"),
        ("INFO", f"{NAME} recovered"),
    ]
    assert changes == [
        (False, "police broker: refused (run 1)"),
        (True, "recovered"),
        (False, lost),
        (True, "recovered"),
    ]
    # Every failure is heard, so the reason shown stays current.
    assert retries == [
        *(f"police broker: refused (run {n})" for n in range(1, 7)),
        lost,
        *(f"police broker: refused (run {n})" for n in range(8, 12)),
    ]


def test_a_link_that_stayed_up_resets_the_backoff_one_kicked_at_once_does_not():
    recorder = Recorder()
    link = FlakyLink(["fail"] * 4 + ["up", "up"])

    async def scenario() -> None:
        async with supervised(link, backoff=Backoff(0.5, 60, uniform=recorder), hold_down_s=0.2):
            await wait_until(link.link_up.is_set, 5, "the link up after 4 failures")
            assert recorder.ceilings == [0.5, 1, 2, 4]
            link.drop.set()  # kicked right after it connected: still backing off
            await wait_until(lambda: len(recorder.ceilings) == 5, 5, "the retry after the kick")
            assert recorder.ceilings[4] == 8
            await wait_until(lambda: link.runs == 6 and link.link_up.is_set(), 5, "up again")
            up_at = time.monotonic()
            await wait_until(lambda: time.monotonic() - up_at > 0.3, 5, "past the hold-down")
            link.drop.set()  # up longer than the hold-down: the next retry starts over
            await wait_until(lambda: len(recorder.ceilings) == 6, 5, "the retry after the drop")
            assert recorder.ceilings[5] == 0.5

    asyncio.run(scenario())


def test_retries_of_a_link_alarms_wait_for_are_never_further_apart_than_the_urgent_bound():
    recorder = Recorder()
    link = FlakyLink(["fail"] * 12)

    async def scenario() -> None:
        async with supervised(
            link, backoff=Backoff(0.5, 60, uniform=recorder), urgency=Alarms(waiting=True)
        ):
            await wait_until(link.link_up.is_set, 5, "the link up after 12 failures")

    asyncio.run(scenario())
    # 0.5, 1, then held at the bound while the uncapped ceiling would reach 60.
    assert recorder.ceilings == [0.5, 1] + [1.5] * 10
    assert URGENT_RETRY_S == 1.5


def test_an_alarm_arriving_cuts_a_long_pause_short():
    # Long pauses take their full ceiling; the urgent one takes none.
    recorder = Recorder(pick=lambda hi: hi if hi > 10 else 0.0)
    link = FlakyLink(["fail"])
    alarms = Alarms(waiting=False)

    async def scenario() -> None:
        async with supervised(link, backoff=Backoff(600, 600, uniform=recorder), urgency=alarms):
            await wait_until(lambda: recorder.ceilings == [600], 5, "a 600 s pause begun")
            assert link.runs == 1
            alarms.arrived.set()
            await wait_until(link.link_up.is_set, 5, "the retry the alarm brought forward")

    asyncio.run(scenario())
    assert recorder.ceilings == [600, 1.5]
