"""The local status page: one static HTML file and a read-only JSON API, on asyncio streams.

A small HTTP/1.1 server, GET only, one request per connection: the request head
is bounded (``MAX_HEAD_BYTES``, ``MAX_HEADERS``) and timed (``REQUEST_TIMEOUT_S``),
the connections are capped (``max_clients``), and anything else is answered
400 and counted. The gateway runs it under ``supervise`` in its own task, so a
page that fails is restarted with backoff and never touches the panic path.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import ssl
import time
from collections.abc import Callable
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

from gateway.block_map import block_map_svg
from gateway.config.model import GatewayConfig, StatusPageConfig
from gateway.shop_board import KEEP_EVENTS, ShopBoard

logger = logging.getLogger(__name__)

MAX_HEAD_BYTES = 8192
MAX_HEADERS = 32
REQUEST_TIMEOUT_S = 5.0
WRITE_TIMEOUT_S = 5.0
FRESH_S = 0.2
"""The journal is read at most this often, however many pages are open."""
DEFAULT_EVENTS = 50

_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    503: "Service Unavailable",
}


class BadRequest(Exception):  # noqa: N818 - an HTTP answer, not a failure of ours
    """A request the page answers with ``status`` and ``message``."""

    def __init__(self, status: int, message: str) -> None:
        """Answer ``status`` with ``message`` as the body."""
        super().__init__(message)
        self.status = status
        self.message = message


def page_html() -> bytes:
    """The page itself (package data: no build step, nothing fetched from elsewhere)."""
    return resources.files("gateway").joinpath("data/status-page.html").read_bytes()


class StatusPage:
    """Serves the page and ``/api/status``, ``/api/events``, ``/api/shops``, ``/api/view``."""

    def __init__(
        self,
        config: GatewayConfig,
        page: StatusPageConfig,
        snapshot: Callable[[], dict[str, Any]],
    ) -> None:
        """Serve ``page.listen`` for ``config``'s block; ``snapshot`` is the gateway's status."""
        self.page = page
        self._snapshot = snapshot
        self._board = ShopBoard(
            config.journal_path, config.shops, alarm_s=config.neighbour_alert.expires_s
        )
        self._map = block_map_svg(config).encode()
        self._html = page_html()
        self._token = page.token.get_secret_value().encode() if page.token else None
        self._fresh_at = -FRESH_S
        self._reading = asyncio.Lock()
        self._writers: set[asyncio.StreamWriter] = set()
        self.link_up = asyncio.Event()
        self.served = 0
        self.bad_requests = 0
        self.unauthorized = 0
        self.refused = 0

    def counters(self) -> dict[str, int]:
        """Requests served, answered 400, refused a token, and connections refused as too many."""
        return {
            "served": self.served,
            "bad_requests": self.bad_requests,
            "unauthorized": self.unauthorized,
            "refused": self.refused,
        }

    def _tls(self) -> ssl.SSLContext | None:
        if self.page.tls_cert is None or self.page.tls_key is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.page.tls_cert, self.page.tls_key)
        return context

    async def run(self) -> None:
        """Serve until cancelled; a bind failure raises (``supervise`` retries it)."""
        server = await asyncio.start_server(
            self._client,
            self.page.host,
            self.page.port,
            ssl=self._tls(),
            limit=MAX_HEAD_BYTES,
        )
        logger.info("status page on %s", self.page.listen)
        self.link_up.set()
        try:
            async with server:
                await server.serve_forever()
        finally:
            self.link_up.clear()
            for writer in list(self._writers):
                writer.close()
            self._board.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._writers) >= self.page.max_clients:
            self.refused += 1
            writer.close()
            return
        self._writers.add(writer)
        try:
            status, kind, body = await self._answer(reader)
            head = (
                f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: {kind}\r\n"
                f"Content-Length: {len(body)}\r\nCache-Control: no-store\r\n"
                "X-Content-Type-Options: nosniff\r\nConnection: close\r\n"
                + ("WWW-Authenticate: Bearer\r\n" if status == 401 else "")
                + "\r\n"
            )
            writer.write(head.encode() + body)
            async with asyncio.timeout(WRITE_TIMEOUT_S):
                await writer.drain()
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            logger.debug("status page client dropped: %r", exc)
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _answer(self, reader: asyncio.StreamReader) -> tuple[int, str, bytes]:
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                head = await reader.readuntil(b"\r\n\r\n")
            path, query, headers = _parse(head)
            status, kind, body = await self._route(path, query, headers)
        except (asyncio.LimitOverrunError, ValueError):
            status, kind, body = 400, "text/plain", b"request head too long or not HTTP\n"
        except asyncio.IncompleteReadError:
            status, kind, body = 400, "text/plain", b"request ended before its head did\n"
        except TimeoutError:
            status, kind, body = 400, "text/plain", b"request too slow\n"
        except BadRequest as exc:
            status, kind, body = exc.status, "text/plain", f"{exc.message}\n".encode()
        if status == 401:
            self.unauthorized += 1
        elif status >= 400:
            self.bad_requests += 1
        else:
            self.served += 1
        return status, kind, body

    async def _route(
        self, path: str, query: dict[str, list[str]], headers: dict[str, str]
    ) -> tuple[int, str, bytes]:
        if path in {"/", "/index.html"}:
            return 200, "text/html; charset=utf-8", self._html
        if not path.startswith("/api/"):
            raise BadRequest(404, f"no page {path}")
        self._authorize(headers)
        if path == "/api/map":
            return 200, "image/svg+xml", self._map
        await self._fresh()
        answers: dict[str, Callable[[], Any]] = {
            "/api/status": self._snapshot,
            "/api/shops": self._shops,
            "/api/events": lambda: self._board.events(_limit(query)),
            "/api/backlog": self._board.backlog,
            "/api/view": lambda: self._view(_limit(query)),
        }
        if path not in answers:
            raise BadRequest(404, f"no API {path}")
        return 200, "application/json", json.dumps(answers[path]()).encode()

    def _authorize(self, headers: dict[str, str]) -> None:
        if self._token is None:
            return
        scheme, _, given = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), self._token):
            raise BadRequest(401, "a bearer token is required")

    async def _fresh(self) -> None:
        """Read the journal's new rows, unless another request did so in the last ``FRESH_S``."""
        async with self._reading:
            if time.monotonic() - self._fresh_at >= FRESH_S:
                await asyncio.to_thread(self._board.refresh)
                self._fresh_at = time.monotonic()

    def _shops(self) -> list[dict[str, Any]]:
        return self._shops_of(self._snapshot())

    def _shops_of(self, status: dict[str, Any]) -> list[dict[str, Any]]:
        walk_test = status.get("walk_test") or {}
        return self._board.shops(status["device_faults"], walk_test.get("shops", ()))

    def _view(self, limit: int) -> dict[str, Any]:
        """Everything the page draws, in one answer."""
        status = self._snapshot()
        return {
            "status": status,
            "backlog": self._board.backlog(),
            "shops": self._shops_of(status),
            "events": self._board.events(limit),
        }


def _parse(head: bytes) -> tuple[str, dict[str, list[str]], dict[str, str]]:
    """The path, query and headers of a GET request head; BadRequest or ValueError if not one."""
    lines = head.decode("ascii").split("\r\n")
    method, target, version = lines[0].split(" ")
    if version not in {"HTTP/1.0", "HTTP/1.1"}:
        raise BadRequest(400, f"not HTTP/1.x: {version[:16]!r}")
    if method != "GET":
        raise BadRequest(405, "the status page is read-only: GET only")
    fields = [line for line in lines[1:] if line]
    if len(fields) > MAX_HEADERS:
        raise BadRequest(400, f"more than {MAX_HEADERS} headers")
    headers = {}
    for field in fields:
        name, colon, value = field.partition(":")
        if not colon or not name or name != name.strip():
            raise BadRequest(400, "a header line without a name")
        headers[name.lower()] = value.strip()
    url = urlsplit(target)
    return url.path, parse_qs(url.query), headers


def _limit(query: dict[str, list[str]]) -> int:
    given = query.get("limit", [str(DEFAULT_EVENTS)])[-1]
    with contextlib.suppress(ValueError):
        if 1 <= (limit := int(given)) <= KEEP_EVENTS:
            return limit
    raise BadRequest(400, f"limit must be 1-{KEEP_EVENTS}, not {given[:16]!r}")
