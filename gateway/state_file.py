"""Small state files in ``state_dir`` that a restart reads back, each replaced whole."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import threading
from pathlib import Path


def write_atomically(path: Path, text: str, *, durable: bool = True) -> None:
    """Replace ``path`` with ``text`` so that a reader never sees half a file.

    ``durable``: the text is on the card, and the rename too, before this returns
    (a power cut right after would otherwise leave an empty or older file); off
    for what is rewritten every few seconds anyway (the status file).
    """
    tmp = path.with_suffix(".tmp")
    with tmp.open("w") as file:
        file.write(text)
        if durable:
            file.flush()
            os.fsync(file.fileno())
    tmp.replace(path)
    if durable:
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            with contextlib.suppress(OSError):  # some filesystems cannot sync a directory
                os.fsync(directory)
        finally:
            os.close(directory)


class StateFile:
    """A state file saved from the event loop, at once or in a worker thread.

    Each save is numbered when its text is handed over, and the file only ever
    moves forward: a slow save in a thread that lands after a newer one is
    dropped, so it can never bring back a state a later save replaced (a walk
    test stopped while a "device heard" save was on its way came back after a
    restart).
    """

    def __init__(self, path: Path) -> None:
        """Keep the state in ``path``."""
        self.path = path
        self._numbers = itertools.count(1)
        self._lock = threading.Lock()  # one writer at a time: they share the .tmp file
        self._written = 0

    def save(self, text: str) -> None:
        """Write ``text`` now; raise ``OSError`` if it cannot be written."""
        self._write(next(self._numbers), text)

    async def save_in_thread(self, text: str) -> None:
        """Write ``text`` off the event loop; raise ``OSError`` if it cannot be written.

        A later ``save`` wins even if this write finishes after it.
        """
        await asyncio.to_thread(self._write, next(self._numbers), text)

    def _write(self, number: int, text: str) -> None:
        with self._lock:
            if number < self._written:
                return
            write_atomically(self.path, text)
            self._written = number
