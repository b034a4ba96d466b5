"""The control socket on a real unix socket: garbage is answered, never fatal; mode 660."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path
from typing import Any

import pytest

from gateway.control import (
    MAX_LINE,
    CommandError,
    ControlServer,
    ControlUnavailableError,
    ask,
)
from tests.clients import wait_until


async def echo(args: dict[str, Any]) -> dict[str, Any]:
    return {"echo": args}


async def broken(_args: dict[str, Any]) -> dict[str, Any]:
    raise RuntimeError("a bug")


async def refuse(_args: dict[str, Any]) -> dict[str, Any]:
    raise CommandError("not now")


async def raw(path: Path, data: bytes) -> bytes:
    reader, writer = await asyncio.open_unix_connection(path, limit=4 * MAX_LINE)
    writer.write(data)
    await writer.drain()
    try:
        return await reader.readline()
    finally:
        writer.close()


def serve(state: Path, scenario) -> None:
    server = ControlServer(state, {"echo": echo, "broken": broken, "refuse": refuse})

    async def main() -> None:
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(server.run(), name="control")
            await wait_until(server.path.exists, 5, "the socket")
            try:
                await scenario(server)
            finally:
                task.cancel()
        assert not server.path.exists()

    asyncio.run(main())


def test_bad_requests_are_answered_and_the_server_keeps_serving(tmp_path):
    """Garbage, unknown commands, a failing command, an over-long line: each answered or dropped."""

    async def scenario(server: ControlServer) -> None:
        assert stat.S_IMODE(server.path.stat().st_mode) == 0o660
        assert b"bad request" in await raw(server.path, b"{not json\n")
        assert b"bad request" in await raw(server.path, b'{"cmd": 5}\n')
        assert b"unknown command 'nope'" in await raw(server.path, b'{"cmd": "nope"}\n')
        assert b"broken failed in the gateway" in await raw(server.path, b'{"cmd": "broken"}\n')
        assert await raw(server.path, b"x" * (2 * MAX_LINE) + b"\n") == b""
        with pytest.raises(CommandError, match="not now"):
            await ask(tmp_path, "refuse")
        assert await ask(tmp_path, "echo", {"a": 1}) == {"echo": {"a": 1}}
        assert server.refused == 4

    serve(tmp_path, scenario)


def test_a_deep_state_dir_still_serves(tmp_path):
    """A state dir whose socket path is past the 108-byte limit is reached through its folder."""
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)

    async def scenario(_server: ControlServer) -> None:
        assert await ask(deep, "echo") == {"echo": {}}

    serve(deep, scenario)


def test_no_gateway_is_said_in_one_line(tmp_path):
    """No socket: the client says no gateway runs, naming the socket."""
    with pytest.raises(
        ControlUnavailableError, match=r"no gateway is running here: .*control.sock"
    ):
        asyncio.run(ask(tmp_path, "echo"))
