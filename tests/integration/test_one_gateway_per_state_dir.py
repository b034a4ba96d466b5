"""Two `lianfang run` on one state directory: the second is refused at once, the first serves on."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Callable

from lab.broker import Mosquitto
from tests.clients import running, wait_until
from tests.harness import TestGateway


def test_second_gateway_is_refused_with_the_first_ones_pid(
    block_broker: Mosquitto,
    police_broker: Mosquitto,
    start_gateway: Callable[..., TestGateway],
    gateway_process: list[TestGateway],
) -> None:
    """The second exits 1 with one line naming the first's PID; the first still forwards a panic."""
    first = start_gateway()
    started = time.monotonic()
    second = subprocess.run(
        [sys.executable, "-m", "gateway", "run", "--config", str(first.config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert second.returncode == 1
    assert time.monotonic() - started < 10
    [line] = second.stderr.splitlines()
    assert f"another gateway (PID {first.pid}) is running on state dir" in line

    async def panic_reaches_police() -> None:
        async with running(
            block_url=block_broker.url, police_url=police_broker.url, shops=["S00011"]
        ) as (panels, platform):
            assert platform is not None
            await panels["S00011"].send("panic", zone="1")
            await wait_until(lambda: bool(platform.by_id), 10, "the panic at the police")

    asyncio.run(panic_reaches_police())
    assert first.process is not None
    assert first.process.poll() is None
    assert "UNIQUE constraint" not in first.log_text()
    assert first.stop() == 0
    again = TestGateway(first.config)
    gateway_process.append(again)
    again.start()  # the lock went with the first process
