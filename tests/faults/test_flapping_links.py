"""The police broker stopped and started by PID 10 times, 1 s down each, a panic in each outage.

Before links came back fast, the backoff reset only after 30 s of uptime and
these panics waited up to 57 s with the broker up. Now the police link retries
at most ``URGENT_RETRY_S`` apart, so each panic arrives within a few seconds of
the broker's return (the bound here is generous; the p99 is measured by
``python -m bench.faults flapping_links``), none lost, none journalled twice.
"""

from __future__ import annotations

import asyncio

from bench.faults.flapping_links import flap_police

DEVICE_EVENTS_ONLY = {"rules": {"disable": ["intrusion-when-armed", "robbery-area-alert"]}}
BOUND_S = 5.0
"""The supervisor's promise (retries at most 1.5 s apart) with room for a loaded machine."""


def test_each_panic_arrives_soon_after_the_police_broker_returns(
    block_broker, police_broker, start_gateway
):
    start_gateway(**DEVICE_EVENTS_ONLY)
    result = asyncio.run(
        flap_police(block_broker.url, police_broker, [1.0] * 10, wait_s=BOUND_S + 3)
    )
    assert result.lost == 0, result.after_return_s
    assert result.duplicated == 0
    slow = [s for s in result.after_return_s if s is None or s > BOUND_S]
    assert not slow, f"broker back -> panic at the police, s: {result.after_return_s}"
