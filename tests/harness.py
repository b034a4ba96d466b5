"""Real processes for the tests: configs made by `lianfang init`, the gateway as `lianfang run`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from gateway.app import READY_WAIT_S
from lab.process import GatewayProcess

REPO = Path(__file__).resolve().parent.parent
SURVEY = REPO / "gateway" / "data" / "changping-road.csv"

READY_S = READY_WAIT_S + 50.0
"""How long a test waits for a process it starts to say it is ready (gateway, receiver, stub).

A start takes 1 to 2 s of CPU, 15 s on a CI runner with more pytest workers than
cores; a gateway then waits up to ``READY_WAIT_S`` more for a field link that is
down (a test's missing serial port). A start that fails still fails at once.
"""


def init_config(
    directory: Path,
    *,
    block_url: str,
    police_url: str | None,
    survey: Path = SURVEY,
    gateway: str = "GW-001",
    mesh_keys: Path | None = None,
    **overrides: Any,
) -> Path:
    """Write lianfang.yaml from a survey (Changping) with the real `lianfang init`; apply overrides.

    ``mesh_keys`` is passed as ``--mesh-keys`` (the folder of `lianfang keys mesh`).
    """
    cmd = [
        sys.executable,
        "-m",
        "gateway",
        "init",
        "--survey",
        str(survey),
        "--gateway",
        gateway,
        "--broker",
        block_url,
        "--dir",
        str(directory),
    ]
    if police_url:
        cmd += ["--police", police_url]
    if mesh_keys is not None:
        cmd += ["--mesh-keys", str(mesh_keys)]
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


class TestGateway(GatewayProcess):
    """The real daemon, plus a look at its status.json."""

    __test__ = False

    def start(self, timeout_s: float = READY_S) -> float:
        """Start and wait for ``READY=1`` as long as a loaded CI machine needs (``READY_S``)."""
        return super().start(timeout_s)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def status(self) -> dict[str, Any]:
        state = yaml.safe_load(self.config.read_text())["state_dir"]
        return json.loads((self.config.parent / state / "status.json").read_text())
