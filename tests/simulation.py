"""`lianfang simulate` as a test drives it: commands in, output lines watched, nothing left running."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self

from tests.harness import READY_S

WAIT_S = 30.0


class Simulation:
    """``lianfang simulate --config CONFIG`` in its own session, killed as a group if a test fails.

    The simulation starts brokers, stubs and a gateway of its own: a kill of the
    simulate process alone would leave them running (and their ports taken).
    """

    def __init__(self, config: Path) -> None:
        """Prepare to simulate ``config``; its stderr goes to ``stderr.log`` beside it."""
        self.config = config
        self.stderr_path = config.parent / "simulate-stderr.log"
        self.lines: list[str] = []
        self._proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> Self:
        with self.stderr_path.open("w") as stderr:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "gateway", "simulate", "--config", str(self.config)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                start_new_session=True,
            )
        stdout = self._proc.stdout
        assert stdout is not None
        threading.Thread(target=lambda: self.lines.extend(stdout), daemon=True).start()
        try:
            self.expect("READY", READY_S)
        except BaseException:
            self.__exit__(None, None, None)  # not called for a failed __enter__
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._proc is None or self._proc.poll() == 0:
            return  # it stopped what it started
        # The brokers and gateway it started too, also when simulate itself failed:
        # the kernel keeps a group's id from reuse while any member lives.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._proc.pid, signal.SIGKILL)
        self._proc.wait()

    @property
    def proc(self) -> subprocess.Popen[str]:
        """The simulate process."""
        assert self._proc is not None, "the simulation was not started"
        return self._proc

    def send(self, *commands: str) -> None:
        """Type ``commands`` at the simulation's prompt, one a line."""
        assert self.proc.stdin is not None
        self.proc.stdin.write("".join(f"{command}\n" for command in commands))
        self.proc.stdin.flush()

    def wait_for(self, seen: Callable[[list[str]], bool], what: str, timeout_s: float) -> None:
        """Wait until ``seen(lines so far)``; fail naming ``what`` if the simulation ends first."""
        deadline = time.monotonic() + timeout_s
        while not seen(list(self.lines)):
            assert self.proc.poll() is None, (
                f"simulate ended ({self.proc.returncode}) before {what}: "
                f"{self.stderr_path.read_text()[-2000:]}"
            )
            assert time.monotonic() < deadline, (
                f"no {what} from simulate in {timeout_s} s: {self.lines}"
            )
            time.sleep(0.05)

    def expect(self, text: str, timeout_s: float = WAIT_S) -> None:
        """Wait for an output line holding ``text``, seen already or still to come."""
        self.wait_for(lambda lines: any(text in line for line in lines), repr(text), timeout_s)

    def quit(self) -> None:
        """Ask the simulation to stop, and check that it stopped cleanly."""
        self.send("quit")
        assert self.proc.wait(timeout=WAIT_S) == 0
