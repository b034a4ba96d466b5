"""The DC-09 receiver with 300 idle TCP connections from one address, then 10 MB of noise.

Before: the idle connections took every slot (a good panel got 0 ACKs) and the
noise wrote 21,000 warning lines. Measured here: a good panel's frame -> ACK
while the idle connections are held, and again after the noise; the lines the
noise left in the receiver's log. ``tests/faults/test_receiver_idle.py`` uses
the same helpers with bounds.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from bench.faults import FaultRow
from bench.stats import percentile
from gateway.events import utc_now
from lab.process import ReceiverProcess
from protocols.dc09 import Message, Token, decode, encode

FAULT = "DC-09 receiver: 300 idle TCP connections from one address, then 10 MB of noise"
IDLE_CONNECTIONS = 300
NOISE_BYTES = 10_000_000
FRAMES = 100
IDLER, NOISY, PANEL = "127.0.0.2", "127.0.0.3", "127.0.0.1"
"""Loopback addresses as three hosts: the per-address cap tells them apart."""

Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def good_frame(seq: int) -> bytes:
    """A well-formed, timestamped Contact ID panic from account 1234."""
    data = f"#1234|1120 01 {seq % 1000:03d}"
    return encode(Message(Token.ADM_CID, seq % 10_000, "1234", data=data, timestamp=utc_now()))


async def answer_to(port: int, seq: int, source: str = PANEL) -> Token | None:
    """A panel at ``source`` sends one good frame: the receiver's answer (None if hung up on)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    try:
        writer.write(good_frame(seq))
        await writer.drain()
        return decode(await asyncio.wait_for(reader.readuntil(b"\r"), 10)).token
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    finally:
        writer.close()


async def open_idle(port: int, count: int, source: str = IDLER) -> list[Connection]:
    """``count`` connections from ``source`` that never send a byte."""
    return [
        await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
        for _ in range(count)
    ]


async def send_noise(port: int, size: int, source: str = NOISY) -> int:
    """``size`` random bytes on one connection, reading the replies; the NAKs counted."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))

    async def count_naks() -> int:
        naks = 0
        while chunk := await reader.read(65536):
            naks += chunk.count(b'"NAK"')
        return naks

    replies = asyncio.ensure_future(count_naks())
    noise = os.urandom(size)
    for start in range(0, size, 65536):
        writer.write(noise[start : start + 65536])
        await writer.drain()
    writer.write_eof()
    try:
        return await asyncio.wait_for(replies, 60)
    finally:
        writer.close()


def log_lines_about(receiver: ReceiverProcess, source: str) -> list[str]:
    """The receiver's log lines that name ``source``."""
    text = receiver.log.read_text(errors="replace") if receiver.log.exists() else ""
    return [line for line in text.splitlines() if source in line]


async def _acks(port: int, first_seq: int) -> tuple[list[float], int]:
    """``FRAMES`` good frames one after another: ACK latencies and how many got none."""
    latencies, missed = [], 0
    for seq in range(first_seq, first_seq + FRAMES):
        sent = time.perf_counter()
        if await answer_to(port, seq) is Token.ACK:
            latencies.append(time.perf_counter() - sent)
        else:
            missed += 1
    return latencies, missed


def run(work: Path) -> FaultRow:
    """Idle connections held while a panel sends, then noise, then the panel again."""
    receiver = ReceiverProcess(work / "centre.sqlite3")
    receiver.start()

    async def scenario() -> tuple[list[float], list[float], int, int]:
        idle = await open_idle(receiver.port, IDLE_CONNECTIONS)
        try:
            during, missed_during = await _acks(receiver.port, 1)
        finally:
            for _, writer in idle:
                writer.close()
        naks = await send_noise(receiver.port, NOISE_BYTES)
        after, missed_after = await _acks(receiver.port, 1 + FRAMES)
        return during, after, missed_during + missed_after, naks

    try:
        during, after, missed, naks = asyncio.run(scenario())
    finally:
        receiver.stop()
    lines = len(log_lines_about(receiver, NOISY))
    return FaultRow(
        FAULT,
        sent=2 * FRAMES,
        lost=missed,
        duplicated=0,
        p99_during_ms=round(percentile(during, 99) * 1000, 1) if during else None,
        p99_after_ms=round(percentile(after, 99) * 1000, 1) if after else None,
        recover_s=None,
        note=f"frame -> ACK; noise: {naks} frames refused, {lines} log line(s) about its source",
    )
