"""A forwarder in-process on a real journal, and the DC-09 receivers it talks to on loopback."""

from __future__ import annotations

import asyncio
import functools
import itertools
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from gateway.config import kinds
from gateway.events import Event, EventKind
from gateway.forwarders import forwarder_class
from gateway.forwarders.base import ForwarderContext, ShopCard
from gateway.journal import Journal
from gateway.journal_reader import JournalReader
from gateway.outbox import OutboxCursor
from gateway.supervise import supervise
from receiver.centre import AlarmStore, Dc09Centre, Listener, listen
from tests.clients import wait_until
from tests.events import make_event

SHOPS = {
    "S00011": ShopCard("S00011", "Tea house", 40.0, 116.0, "L1", "M1", "s1"),
    "S00012": ShopCard("S00012", "Bakery", 40.0, 116.0, "L1", "M1", "s1", account="BEEF"),
}


def event(
    kind: EventKind, shop: str | None = "S00011", zone: str | None = None, **attrs: Any
) -> Event:
    return make_event(kind, shop=shop, zone=zone, **attrs)


@dataclass
class Rig:
    """A gateway's journal and DC-09 forwarder, running under supervise()."""

    journal: Journal
    forwarder: Any
    changes: list[tuple[bool, str]] = field(default_factory=list)

    async def send(self, *events: Event) -> None:
        """Journal ``events`` and wait until they are committed (pending for the forwarder)."""
        committed = self.journal.stats.appended + len(events)
        for ev in events:
            await self.journal.append(ev)
        await wait_until(lambda: self.journal.stats.appended >= committed, 10, "events committed")

    def pending(self) -> int:
        reader = JournalReader(self.journal.path)
        try:
            return reader.pending_counts().get("centre", 0)
        finally:
            reader.close()

    def all_closed(self, count: int) -> bool:
        """``count`` deliveries journalled and none of them still pending."""
        rows = self.delivery_rows()
        return len(rows) == count and all(acked for _, acked, _ in rows)

    def delivery_rows(self) -> list[tuple[int, str | None, str | None]]:
        reader = JournalReader(self.journal.path)
        try:
            return reader._conn.execute(
                "SELECT seq, acked_at, last_error FROM deliveries WHERE forwarder='centre'"
                " ORDER BY seq"
            ).fetchall()
        finally:
            reader.close()


@asynccontextmanager
async def forwarding(tmp_path: Path, **config: Any) -> AsyncIterator[Rig]:
    """Run a journal and a forwarder named 'centre' (DC-09 unless ``kind`` says) with ``config``."""
    defaults = (
        {"account": "9999", "ack_timeout_s": 2} if config.get("kind", "dc09") == "dc09" else {}
    )
    settings = {"name": "centre", "kind": "dc09"} | defaults | config
    cfg = TypeAdapter(kinds.forwarder_settings()).validate_python(settings)
    journal = Journal(
        tmp_path / "journal.sqlite3",
        route=lambda e: ["centre"] if cfg.accepts_kind(e.kind) else [],
        max_size_bytes=10**9,
    )
    cursor = OutboxCursor(journal, "centre")
    context = ForwarderContext("GW-T", "L1", SHOPS, dict, 60)
    forwarder = forwarder_class(cfg.kind)(cfg, context=context, cursor=cursor)
    rig = Rig(journal, forwarder)

    async def changed(name: str, *, up: bool, detail: str) -> None:
        rig.changes.append((up, detail))

    async with asyncio.TaskGroup() as tg:
        tasks = [
            tg.create_task(journal.run(), name="journal"),
            tg.create_task(
                supervise(
                    "centre",
                    forwarder.run,
                    link=forwarder,
                    on_change=changed,
                    base_delay=0.05,
                    max_delay=0.5,
                ),
                name="forwarder",
            ),
        ]
        try:
            yield rig
        finally:
            for task in tasks:
                task.cancel()
    cursor.close()


_stores = itertools.count()


@asynccontextmanager
async def centre(
    tmp_path: Path, *, udp: bool = False, key: bytes | None = None, port: int = 0, **kw: Any
) -> AsyncIterator[tuple[Dc09Centre, Listener]]:
    """Our own receiving centre on a loopback port (a fresh one unless ``port`` is given)."""
    store = AlarmStore(tmp_path / f"centre-{next(_stores)}.sqlite3")
    receiving = Dc09Centre(store, key=key, **kw)
    listener = await listen(receiving, "127.0.0.1", port, udp=udp)
    try:
        yield receiving, listener
    finally:
        listener.close()  # the store stays open: tests read it afterwards


def stored(store: AlarmStore) -> list[tuple[str, int, str, int, int]]:
    """(account, sequence, code with qualifier, zone) of every stored DC-09 alarm, in order."""
    return store._conn.execute(
        "SELECT account, sequence, coalesce(qualifier, '') || code, zone FROM alarms WHERE via='dc09' ORDER BY id"
    ).fetchall()


@dataclass
class Proxy:
    """A TCP relay in front of a receiver that can lose replies or cut a message in half."""

    target_port: int
    drop_replies: int = 0
    cut_next_message: bool = False
    port: int = 0
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._upstream(reader, up_writer, writer), name="proxy-up")
                tg.create_task(self._downstream(up_reader, writer), name="proxy-down")
        except* (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            up_writer.close()

    async def _upstream(
        self, reader: asyncio.StreamReader, up: asyncio.StreamWriter, client: asyncio.StreamWriter
    ) -> None:
        while frame := await reader.readuntil(b"\r"):
            if self.cut_next_message:
                self.cut_next_message = False
                up.write(frame[: len(frame) // 2])
                await up.drain()
                client.close()
                up.close()
                raise ConnectionResetError("cut mid-message")
            up.write(frame)
            await up.drain()

    async def _downstream(self, up: asyncio.StreamReader, client: asyncio.StreamWriter) -> None:
        while frame := await up.readuntil(b"\r"):
            if self.drop_replies:
                self.drop_replies -= 1
                continue
            client.write(frame)
            await client.drain()


def aio(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test function on a fresh event loop (fixtures pass through)."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return run
