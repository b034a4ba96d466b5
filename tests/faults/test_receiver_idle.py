"""The DC-09 receiver under idle connections and noise: a good panel is still ACKed, logs stay short.

Before: 300 idle TCP connections took every slot (a good panel got no ACK for as
long as they stayed open) and 10 MB of noise wrote 21,000 warning lines. Now
one address holds at most 16 connections (the documented default), a silent
connection is closed after the idle timeout, accepted sockets keep TCP
keepalive on, and refused frames are logged once per source per interval.
"""

from __future__ import annotations

import asyncio
import resource
import socket
from pathlib import Path

import pytest

from bench.faults.receiver_idle import (
    IDLE_CONNECTIONS,
    IDLER,
    NOISE_BYTES,
    NOISY,
    answer_to,
    log_lines_about,
    open_idle,
    send_noise,
)
from gateway.events import utc_now
from lab.process import ReceiverProcess
from protocols.dc09 import Message, Token, decode, encode
from tests.clients import wait_until
from tests.forwarder_rig import aio, centre
from tests.harness import READY_S

PER_SOURCE = 16
"""The receiver's documented default (docs/dc09.md)."""


@pytest.fixture
def receiver(tmp_path: Path):
    # Our end of 300 connections, and the receiver's: well under 1,024 descriptors each,
    # but a container may start lower than that.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = IDLE_CONNECTIONS * 2 + 100
    if soft < wanted:
        if hard != resource.RLIM_INFINITY and hard < wanted:
            pytest.fail(f"RLIMIT_NOFILE hard limit {hard} < {wanted}: raise it to run this test")
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    process = ReceiverProcess(tmp_path / "centre.sqlite3")
    process.start(READY_S)
    yield process
    process.stop()
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_300_idle_connections_from_one_address_leave_room_for_a_good_panel(receiver):
    async def scenario() -> None:
        idle = await open_idle(receiver.port, IDLE_CONNECTIONS)
        # A refused connection is closed at once: its read ends.
        ends = [asyncio.ensure_future(reader.read()) for reader, _ in idle]
        try:
            await wait_until(
                lambda: sum(e.done() for e in ends) >= IDLE_CONNECTIONS - PER_SOURCE,
                20,
                "the connections past the per-address cap closed",
            )
            assert await answer_to(receiver.port, 1) is Token.ACK
            assert sum(e.done() for e in ends) == IDLE_CONNECTIONS - PER_SOURCE
        finally:
            for end in ends:
                end.cancel()
            for _, writer in idle:
                writer.close()

    asyncio.run(scenario())
    # 284 refusals, one line: the rest fall within its interval.
    assert len(log_lines_about(receiver, IDLER)) == 1


def test_10_mb_of_noise_makes_a_few_log_lines_and_the_receiver_keeps_serving(receiver):
    async def scenario() -> None:
        naks = await send_noise(receiver.port, NOISE_BYTES)
        assert naks > 1000  # noise ends a "frame" at every CR: each one is refused
        assert await answer_to(receiver.port, 2) is Token.ACK

    asyncio.run(scenario())
    lines = log_lines_about(receiver, NOISY)
    # The first refusal at once; then one line per 60 s interval at most.
    assert 1 <= len(lines) <= 2, lines[:5]


@aio
async def test_a_silent_connection_is_closed_after_the_idle_timeout_a_talking_one_is_not(
    tmp_path: Path,
) -> None:
    async with centre(tmp_path, idle_timeout_s=0.5) as (cen, lis):
        silent_reader, silent = await asyncio.open_connection("127.0.0.1", lis.port)
        talking_reader, talking = await asyncio.open_connection("127.0.0.1", lis.port)
        await wait_until(lambda: len(cen._connections) == 2, 10, "both connections served")
        sockets = [w.get_extra_info("socket") for w in cen._connections]
        assert [s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) for s in sockets] == [1, 1]
        # NULL supervision every 0.2 s keeps a connection; silence for 0.5 s ends one.
        for seq in range(1, 8):
            talking.write(encode(Message(Token.NULL, seq, "1234", timestamp=utc_now())))
            await talking.drain()
            reply = await asyncio.wait_for(talking_reader.readuntil(b"\r"), 10)
            assert decode(reply).token is Token.ACK
            await asyncio.sleep(0.2)  # the panel's polling period, not a wait for anything
        assert await asyncio.wait_for(silent_reader.read(), 10) == b""
        assert not talking_reader.at_eof()
        assert cen.idle_closed == 1
        silent.close()
        talking.close()
