"""Run a serial firmware stub as a child process: its pty, its commands, its output.

Used by ``lianfang simulate``, the tests and the benchmarks.
"""

from __future__ import annotations

import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

from lab.broker import terminate


class StubProcess:
    """``python -m firmware_stubs.NAME --pty ...``, driven through its stdin."""

    def __init__(
        self, name: str, *args: str, log: Path | None = None, package: str = "firmware_stubs"
    ) -> None:
        """Prepare ``package.name`` (a stub by default) with extra command-line ``args``."""
        self.args = [sys.executable, "-m", f"{package}.{name}", *args]
        self.log = log
        self.process: subprocess.Popen[str] | None = None
        self.port = ""
        self.lines: list[str] = []
        self._new: queue.Queue[str] = queue.Queue()

    def start(self, timeout_s: float = 15.0, *, ready: str = "PTY ") -> str:
        """Start it; wait for its ``ready`` line and return the pty path it printed, if any."""
        stderr = self.log.open("a") if self.log else subprocess.DEVNULL
        self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            self.args,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            bufsize=1,
        )
        threading.Thread(target=self._collect, name="stub-output", daemon=True).start()
        first = self.expect(ready, timeout_s)
        if first.startswith("PTY "):
            self.port = first.split(" ", 1)[1]
        return self.port

    def _collect(self) -> None:
        assert self.process is not None
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))
            self._new.put(line.rstrip("\n"))

    def send(self, command: str) -> None:
        """Give the stub one command."""
        assert self.process is not None
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()

    def expect(self, prefix: str, timeout_s: float = 10.0) -> str:
        """Wait for the next output line starting with ``prefix``; return it."""
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._new.get(timeout=left)
            except queue.Empty:
                break
            if line.startswith(prefix):
                return line
        raise TimeoutError(f"{self.args[2]}: no {prefix!r} line in {timeout_s} s")

    def count(self, prefix: str) -> int:
        """How many output lines so far start with ``prefix``."""
        return sum(line.startswith(prefix) for line in list(self.lines))

    def stop(self) -> None:
        """SIGTERM it (SIGKILL if it hangs)."""
        if self.process is not None:
            process, self.process = self.process, None
            terminate(process, timeout_s=5)  # type: ignore[arg-type]
