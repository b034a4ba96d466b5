"""Run ``lianfang run`` as a child process, as systemd would: ready means ``READY=1``.

Used by ``lianfang demo``, the tests and the benchmarks, so that all of them run
the real daemon and learn it is ready the way systemd does.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

from lab.broker import free_port, terminate


class NotifyingProcess:
    """A child that says ``READY=1`` on ``$NOTIFY_SOCKET``; stopped or killed by its PID."""

    def __init__(self, args: list[str], *, log: Path, env: dict[str, str] | None = None) -> None:
        """Prepare to run ``args``, ``env`` added to ours; the child's stderr goes to ``log``."""
        self.args = args
        self.log = log
        self.env = env or {}
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """PID of the running child."""
        return self.process.pid if self.process else None

    def start(self, timeout_s: float = 15.0) -> float:
        """Start and wait for ``READY=1``; return the seconds from spawn to ready."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            # An abstract socket (as systemd may give): no file, and no path length
            # limit to hit under a deep TMPDIR (108 bytes for a path).
            name = f"lianfang-notify-{os.getpid()}-{secrets.token_hex(8)}"
            sock.bind(f"\0{name}")
            sock.settimeout(0.1)
            env = {**os.environ, **self.env, "NOTIFY_SOCKET": f"@{name}"}
            started = time.monotonic()
            with self.log.open("ab") as log:
                self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and modules
                    self.args,
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=log,
                )
            while time.monotonic() - started < timeout_s:
                if self.process.poll() is not None:
                    code = self.process.returncode
                    self.process = None
                    raise RuntimeError(f"{self.args[2]} exited with {code}: {self.log_tail()}")
                try:
                    message = sock.recv(4096).decode()
                except TimeoutError:
                    continue
                if "READY=1" in message.split("\n"):
                    return time.monotonic() - started
        self.kill()
        raise RuntimeError(f"{self.args[2]} not ready in {timeout_s} s: {self.log_tail()}")

    def log_tail(self, chars: int = 2000) -> str:
        """The end of the child's log."""
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def stop(self, timeout_s: float = 10.0) -> int:
        """SIGTERM and wait; return the exit code (SIGKILL if it hangs)."""
        if self.process is None:
            return 0
        process, self.process = self.process, None
        code = terminate(process, timeout_s=timeout_s)
        if code is None:
            raise RuntimeError(f"{self.args[2]} ignored SIGTERM for {timeout_s:g} s; killed")
        return code

    def kill(self) -> None:
        """``kill -9``, as a power cut or the OOM killer would."""
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
            self.process = None


def service_environment() -> dict[str, str]:
    """The variables the systemd unit (``gateway/data/lianfang.service``) sets, but the config's.

    The config is given by ``--config`` here.
    """
    unit = resources.files("gateway").joinpath("data", "lianfang.service").read_text("utf-8")
    pairs = (
        line.removeprefix("Environment=").split("=", 1)
        for line in unit.splitlines()
        if line.startswith("Environment=")
    )
    return {name: value for name, value in pairs if name != "LIANFANG_CONFIG"}


class GatewayProcess(NotifyingProcess):
    """The daemon: ``python -m gateway run --config PATH``, in the service's environment."""

    def __init__(self, config: Path, *, log: Path | None = None) -> None:
        """Prepare to run the gateway of ``config``; its stderr goes to ``log``."""
        self.config = config
        super().__init__(
            [sys.executable, "-m", "gateway", "run", "--config", str(config)],
            log=log or config.parent / "gateway.log",
            # Benches and tests measure the daemon as it is deployed, malloc arenas included.
            env=service_environment(),
        )


class ReceiverProcess(NotifyingProcess):
    """``python -m gateway receiver`` on a free loopback port: a DC-09 alarm receiving centre."""

    def __init__(
        self,
        db: Path,
        *,
        udp: bool = False,
        key: str | None = None,
        mqtt: str | None = None,
        log: Path | None = None,
    ) -> None:
        """Prepare a receiver storing into ``db`` (and the feed at ``mqtt``); stderr to ``log``."""
        self.db = db
        self.port = free_port(kind=socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
        self.url = f"{'udp' if udp else 'tcp'}://127.0.0.1:{self.port}"
        args = [sys.executable, "-m", "gateway", "receiver", "--dc09", str(self.port)]
        args += ["--db", str(db)] + (["--udp"] if udp else []) + (["--key", key] if key else [])
        args += ["--mqtt", mqtt] if mqtt else []
        super().__init__(args, log=log or db.with_suffix(".log"))
