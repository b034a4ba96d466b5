"""The local control socket: how ``lianfang walktest`` and ``learn`` reach the running gateway.

A unix stream socket in the state dir, mode 660 in the state dir's group (the
service's group), so an installer in that group may use it and nobody else.
One JSON object a line each way: ``{"cmd": "walktest.start", "args": {...}}``
answered by ``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``. A
command that fails answers with its error; nothing a client sends can stop the
server or reach the panic path.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from gateway.ratelimit import RateLimitedLog

logger = logging.getLogger(__name__)

SOCKET_NAME = "control.sock"
MAX_LINE = 64 * 1024
"""The longest request line; a longer one is refused and the connection closed."""
MAX_ADDRESS = 107
"""The longest unix socket path the kernel takes (108 bytes with its NUL)."""
MAX_CLIENTS = 8
"""Connections served at once; more wait in the listen backlog."""

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
"""A command: its ``args`` in, the answer's fields out; raises ``CommandError`` to refuse."""


class CommandError(Exception):
    """A command refused; the message is sent to the client as is."""


class ControlUnavailableError(Exception):
    """The client cannot reach a running gateway; the message says why in one line."""


class ControlServer:
    """Serves ``commands`` on ``state_dir/control.sock`` until cancelled."""

    def __init__(self, state_dir: Path, commands: dict[str, Handler]) -> None:
        """Serve in ``state_dir``; ``commands`` by name."""
        self.path = state_dir / SOCKET_NAME
        self.commands = commands
        self.refused = 0
        self._slots = asyncio.Semaphore(MAX_CLIENTS)
        self._log = RateLimitedLog(logger, interval_s=60)

    async def run(self) -> None:
        """Listen until cancelled; the socket file goes with the server."""
        # The state-dir lock is ours: a socket file left there is a dead gateway's.
        self.path.unlink(missing_ok=True)
        with _address(self.path) as address:
            server = await asyncio.start_unix_server(self._client, path=address, limit=MAX_LINE)
        try:
            self.path.chmod(0o660)
            with contextlib.suppress(OSError):  # only root may hand it to another group
                os.chown(self.path, -1, self.path.parent.stat().st_gid)
            async with server:
                await server.serve_forever()
        finally:
            self.path.unlink(missing_ok=True)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with self._slots:
                while line := await reader.readline():
                    answer = await self.answer(line)
                    writer.write(json.dumps(answer).encode() + b"\n")
                    await writer.drain()
        except (ValueError, OSError) as exc:  # an over-long line or a client gone
            self.refused += 1
            self._log.warning("client", "control client dropped: %s", exc)
        finally:
            writer.close()

    async def answer(self, line: bytes) -> dict[str, Any]:
        """The answer to one request line; every failure is an answer, never a raise."""
        try:
            request = json.loads(line)
            name = request["cmd"]
            args = request.get("args") or {}
            if not isinstance(name, str) or not isinstance(args, dict):
                raise TypeError("cmd must be a string and args an object")  # noqa: TRY301
        except (ValueError, KeyError, TypeError) as exc:
            self.refused += 1
            return {"ok": False, "error": f"bad request: {exc}"}
        handler = self.commands.get(name)
        if handler is None:
            self.refused += 1
            return {"ok": False, "error": f"unknown command {name!r}: {', '.join(self.commands)}"}
        try:
            return {"ok": True, **await handler(args)}
        except CommandError as exc:
            return {"ok": False, "error": str(exc)}
        except Exception as exc:  # a bug in a command must not stop the server or the gateway
            logger.exception("control command %s failed", name)
            return {"ok": False, "error": f"{name} failed in the gateway: {exc!r}"}


@contextlib.contextmanager
def _address(path: Path) -> Iterator[str]:
    """``path`` as a socket address; a long one through its folder's descriptor (Linux)."""
    if len(os.fsencode(path)) <= MAX_ADDRESS:
        yield str(path)
        return
    folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{folder}/{path.name}"
    finally:
        os.close(folder)


async def ask(
    state_dir: Path, cmd: str, args: dict[str, Any] | None = None, *, timeout_s: float = 10
) -> dict[str, Any]:
    """Send one command to the gateway running on ``state_dir``; its answer.

    Raises ``ControlUnavailableError`` (no gateway, no permission) or ``CommandError``.
    """
    path = state_dir / SOCKET_NAME
    try:
        async with asyncio.timeout(timeout_s):
            with _address(path) as address:
                reader, writer = await asyncio.open_unix_connection(address, limit=MAX_LINE)
            try:
                writer.write(json.dumps({"cmd": cmd, "args": args or {}}).encode() + b"\n")
                await writer.drain()
                line = await reader.readline()
            finally:
                writer.close()
    except FileNotFoundError:
        raise ControlUnavailableError(
            f"no gateway is running here: {path} does not exist"
        ) from None
    except ConnectionRefusedError:
        raise ControlUnavailableError(
            f"no gateway is running here: nobody answers on {path}"
        ) from None
    except PermissionError:
        raise ControlUnavailableError(
            f"permission denied on {path}: run as the service's user or a member of its group"
        ) from None
    except TimeoutError:
        raise ControlUnavailableError(
            f"the gateway did not answer on {path} within {timeout_s:g} s"
        ) from None
    except OSError as exc:
        raise ControlUnavailableError(f"cannot reach the gateway on {path}: {exc}") from None
    if not line:
        raise ControlUnavailableError(f"the gateway closed {path} without an answer")
    answer: dict[str, Any] = json.loads(line)
    if not answer.pop("ok", False):
        raise CommandError(str(answer.get("error", "refused")))
    return answer
