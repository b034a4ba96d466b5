"""Our receiving centre under malformed input on real sockets: NAK or DUH, never a crash."""

from __future__ import annotations

import asyncio
import socket
from datetime import timedelta
from pathlib import Path

from gateway.events import utc_now
from protocols.dc09 import Message, Token, crc16, decode, encode
from receiver.centre import DEDUP_WINDOW
from tests.clients import wait_until
from tests.forwarder_rig import aio, centre, stored

KEY = bytes(range(32))


def frame_of(body: bytes) -> bytes:
    return b"\n%04X%04X%s\r" % (crc16(body), len(body), body)


def good(seq: int, zone: int = 1, key: bytes | None = None) -> bytes:
    data = f"#1234|1120 01 {zone:03d}"
    return encode(Message(Token.ADM_CID, seq, "1234", data=data, timestamp=utc_now()), key)


async def exchange(port: int, *frames: bytes) -> list[Message]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    replies = []
    for frame in frames:
        writer.write(frame)
        await writer.drain()
        reply = await asyncio.wait_for(reader.readuntil(b"\r"), 10)
        replies.append(decode(reply, {"": KEY}))
    writer.close()
    return replies


@aio
async def test_malformed_frames_get_nak_or_duh(tmp_path: Path) -> None:
    """Bad CRC, wrong length, garbage, a huge line, a wrong key: NAK; unknown data: DUH; then ACK."""
    async with centre(tmp_path, key=KEY) as (cen, lis):
        bad_crc = bytearray(good(1))
        bad_crc[1:5] = b"0000"
        wrong_length = bytearray(good(2))
        wrong_length[5:9] = b"0FFF"
        wrong_key = good(3, key=bytes(32))
        before = utc_now()
        replies = await exchange(
            lis.port,
            bytes(bad_crc),
            bytes(wrong_length),
            b"\nhello world\r",
            b"x" * 5000 + b"\r",
            wrong_key,
            frame_of(b'"ADM-CID"0005L0#1234[#1234|not contact id]'),
            frame_of(b'"XYZ"0006L0#1234[]'),
            good(7, zone=9),
            good(8, zone=10, key=KEY),
        )
        after = utc_now()
    tokens = [r.token for r in replies]
    assert tokens == [Token.NAK] * 5 + [Token.DUH] * 2 + [Token.ACK] * 2
    assert replies[5].sequence == 5
    assert replies[-1].encrypted
    # A NAK carries the centre's clock (to the second) so that the sender can correct its own.
    second = timedelta(seconds=1)
    stamps = [r.timestamp for r in replies[:5]]
    assert all(t is not None and before - second <= t <= after + second for t in stamps), stamps
    assert [row[1:] for row in stored(cen.store)] == [(7, "1120", 9), (8, "1120", 10)]
    assert cen.rejected["crc"] == 1
    assert cen.rejected["length"] == 1
    assert cen.rejected["key"] == 1
    assert cen.rejected["size"] == 1


@aio
async def test_copies_are_acknowledged_and_stored_once(tmp_path: Path) -> None:
    """The same message twice (its ACK was lost) is ACKed twice and stored once."""
    async with centre(tmp_path) as (cen, lis):
        frame = good(42)
        replies = await exchange(lis.port, frame, frame, good(43))
    assert [r.token for r in replies] == [Token.ACK] * 3
    assert [row[1] for row in stored(cen.store)] == [42, 43]
    assert cen.store.duplicates == 1


@aio
async def test_udp_garbage_is_nakked(tmp_path: Path) -> None:
    """A datagram of garbage gets a NAK; the next good one an ACK."""
    async with centre(tmp_path, udp=True) as (_cen, lis):
        loop = asyncio.get_running_loop()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(10)
            sock.connect(("127.0.0.1", lis.port))
            replies = []
            for datagram in (b"\x00\xff" * 700, good(1)):
                sock.send(datagram)
                replies.append(decode(await loop.run_in_executor(None, sock.recv, 2048)))
    assert [r.token for r in replies] == [Token.NAK, Token.ACK]


@aio
async def test_connections_beyond_the_limit_are_closed(tmp_path: Path) -> None:
    """Past max_connections a new connection is closed at once; those open are still served."""
    async with centre(tmp_path, max_connections=2) as (cen, lis):
        first = await asyncio.open_connection("127.0.0.1", lis.port)
        second = await asyncio.open_connection("127.0.0.1", lis.port)
        await wait_until(lambda: len(cen._connections) == 2, 10, "two connections served")
        reader, writer = await asyncio.open_connection("127.0.0.1", lis.port)
        assert await asyncio.wait_for(reader.read(), 10) == b""
        writer.close()
        for _, open_writer in (first, second):
            open_writer.close()
        await wait_until(lambda: not cen._connections, 10, "both closed")
        replies = await exchange(lis.port, good(1))
    assert [r.token for r in replies] == [Token.ACK]
    assert cen.rejected["connections"] == 1


@aio
async def test_same_number_after_the_dedup_window_is_a_new_alarm(tmp_path: Path) -> None:
    """A wrapped sequence number with the same data, past DEDUP_WINDOW, is stored, not dropped."""
    moment = [utc_now()]
    async with centre(tmp_path, clock=lambda: moment[0]) as (cen, lis):
        untimed = encode(Message(Token.ADM_CID, 5, "1234", data="#1234|1120 01 001"))
        await exchange(lis.port, untimed, untimed)
        moment[0] += DEDUP_WINDOW + timedelta(seconds=1)
        await exchange(lis.port, untimed)
    assert [row[1] for row in stored(cen.store)] == [5, 5]
    assert cen.store.duplicates == 1
