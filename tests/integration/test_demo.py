"""`lianfang demo`: one command, on the secured block broker, and nothing left running after."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def processes_mentioning(text: str) -> list[str]:
    """Command lines of running processes that name ``text`` (our demo's private folder)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue  # gone meanwhile
        if text in cmdline:
            found.append(f"{proc.name}: {cmdline}")
    return found


def test_demo_alerts_ten_neighbours_on_an_authenticated_broker_and_leaves_nothing(
    tmp_path, tmp_path_factory
):
    here = tmp_path_factory.mktemp("demo-cwd")
    demo = subprocess.run(
        [sys.executable, "-m", "gateway", "demo"],
        capture_output=True, text=True, timeout=120, check=False, cwd=here,
        env={**os.environ, "TMPDIR": str(tmp_path), "COLUMNS": "200"},
    )  # fmt: skip
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "87 shop logins and the gateway's" in demo.stdout
    assert "Neighbours alerted (10)" in demo.stdout
    assert "received on police/v1/L1/GW-001/events" in demo.stdout
    assert processes_mentioning(str(tmp_path)) == []
    assert list(tmp_path.iterdir()) == []  # its folder, passwords and all, is gone
    report = here / "lianfang-demo-report.html"
    assert f"Commissioning report of the block: {report}" in demo.stdout
    assert "Commissioning report: gateway GW-001" in report.read_text()
