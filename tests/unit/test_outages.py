"""The link's outages in wall-clock time, through steps of the gateway's own clock (decision 105)."""

from __future__ import annotations

import time

import pytest

from gateway.ratelimit import Outages

DAY_S = 86_400.0


class SteppedClock:
    """A wall clock ``offset_s`` away from the monotonic one; ``step`` moves it as NTP does."""

    def __init__(self, offset_s: float) -> None:
        self.offset_s = offset_s

    def __call__(self) -> float:
        return time.monotonic() + self.offset_s

    def step(self, by_s: float) -> None:
        self.offset_s += by_s


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> SteppedClock:
    stepped = SteppedClock(offset_s=1.8e9 - time.monotonic())
    monkeypatch.setattr(time, "time", stepped)
    return stepped


def test_a_loss_noted_before_a_step_forward_opens_no_day_long_span(clock: SteppedClock) -> None:
    """Booted a day behind (no real-time clock), the link drops, NTP steps, the link returns."""
    outages = Outages(slack_s=5)
    clock.step(-DAY_S)
    outages.lost(time.time())
    clock.step(+DAY_S)  # NTP: the wall clock is right from here on
    outages.up(time.time())
    now = time.time()
    assert outages.covers(now - 1)  # sent just before the loss was noticed
    assert not outages.covers(now - DAY_S / 2)  # a forged clock half a day back


def test_a_step_back_during_an_outage_leaves_the_backlog_inside_it(clock: SteppedClock) -> None:
    """Lost with the clock an hour fast; NTP steps it back; the outage's events still count."""
    outages = Outages(slack_s=5)
    clock.step(3600)
    outages.lost(time.time())
    lost_true = time.time() - 3600
    clock.step(-3600)
    outages.up(time.time())
    assert outages.covers(lost_true - 1)
    assert not outages.covers(time.time() + 60)


def test_a_restored_loss_in_the_future_is_no_outage(clock: SteppedClock) -> None:
    """The state file was written by a clock ahead of today's (a Pi booted at 1970): no span."""
    outages = Outages(slack_s=70, lost_at=time.time() + DAY_S)
    outages.up(time.time())
    assert not outages.covers(time.time() - 1)
