"""Real processes for the tests: the gateway as `lianfang run`, with systemd-style readiness."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
SURVEY = REPO / "gateway" / "data" / "changping-road.csv"


def init_config(directory: Path, *, block_url: str, police_url: str | None, **overrides: Any) -> Path:
    """Write lianfang.yaml from the Changping survey with the real `lianfang init`; apply overrides."""
    cmd = [sys.executable, "-m", "gateway", "init", "--survey", str(SURVEY), "--gateway", "GW-001",
           "--broker", block_url, "--dir", str(directory)]
    if police_url:
        cmd += ["--police", police_url]
    subprocess.run(cmd, check=True, capture_output=True)
    path = directory / "lianfang.yaml"
    if overrides:
        data = yaml.safe_load(path.read_text())
        _merge(data, overrides)
        path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _merge(into: dict[str, Any], extra: dict[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


class GatewayProcess:
    """`python -m gateway run` as systemd would run it: ready is READY=1 on $NOTIFY_SOCKET."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.process: subprocess.Popen[bytes] | None = None
        self._dir = Path(tempfile.mkdtemp(prefix="lianfang-notify-"))
        self.log = config.parent / "gateway.log"

    def start(self, timeout_s: float = 15.0) -> float:
        """Start and wait for READY=1; return seconds from spawn to ready."""
        sock_path = self._dir / "notify.sock"
        sock_path.unlink(missing_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(sock_path))
        sock.settimeout(0.2)
        env = {**os.environ, "NOTIFY_SOCKET": str(sock_path), "LIANFANG_LOG_LEVEL": "INFO"}
        started = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", "--config", str(self.config)],
            env=env, stdout=subprocess.DEVNULL, stderr=self.log.open("ab"),
        )
        try:
            while time.monotonic() - started < timeout_s:
                if self.process.poll() is not None:
                    raise RuntimeError(f"gateway exited with {self.process.returncode}: {self.log_text()[-2000:]}")
                try:
                    message = sock.recv(4096).decode()
                except TimeoutError:
                    continue
                if "READY=1" in message.split("\n"):
                    return time.monotonic() - started
            raise RuntimeError(f"gateway not ready in {timeout_s} s: {self.log_text()[-2000:]}")
        finally:
            sock.close()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def status(self) -> dict[str, Any]:
        """The gateway's status.json."""
        state = yaml.safe_load(self.config.read_text())["state_dir"]
        return json.loads((self.config.parent / state / "status.json").read_text())

    def kill(self) -> None:
        """kill -9, as a power cut or OOM would."""
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
            self.process = None

    def stop(self, timeout_s: float = 10.0) -> int:
        """SIGTERM; return the exit code."""
        if self.process is None:
            return 0
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise
        self.process = None
        return code
