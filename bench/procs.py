"""Processes the benchmark starts and watches: the relay, memory and CPU sampling, machine facts."""

from __future__ import annotations

import contextlib
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from lab.broker import mosquitto_binary
from lab.process import NotifyingProcess

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class RelayProcess(NotifyingProcess):
    """``python -m bench.relay`` as a child; ready means ``READY=1``, as for the gateway."""

    def __init__(
        self,
        *,
        block_url: str,
        police_url: str,
        neighbours: Path,
        log: Path,
        client_id: str,
        login: tuple[str, Path] | None = None,
    ) -> None:
        """Prepare a relay between the two brokers; its stderr goes to ``log``.

        ``login`` is a user name and password file for the block broker.
        """
        args = [
            sys.executable, "-m", "bench.relay", "--block", block_url, "--police", police_url,
            "--neighbours", str(neighbours), "--client-id", client_id,
        ]  # fmt: skip
        if login is not None:
            args += ["--username", login[0], "--password-file", str(login[1])]
        super().__init__(args, log=log)


class Profiler:
    """``py-spy record`` of a process (collapsed stacks), if py-spy is installed."""

    def __init__(self, pid: int, output: Path, *, rate: int = 200) -> None:
        """Sample ``pid`` at ``rate`` Hz into ``output`` once started."""
        self.pid = pid
        self.output = output
        self.rate = rate
        self.process: subprocess.Popen[bytes] | None = None

    @staticmethod
    def binary() -> str | None:
        """Path of py-spy beside this interpreter or on PATH."""
        beside = Path(sys.executable).parent / "py-spy"
        return str(beside) if beside.exists() else shutil.which("py-spy")

    def start(self) -> Profiler:
        """Begin sampling (does nothing without py-spy)."""
        binary = self.binary()
        if binary is not None:
            self.process = subprocess.Popen(
                [binary, "record", "--pid", str(self.pid), "--rate", str(self.rate),
                 "--format", "raw", "--threads", "--nonblocking", "--output", str(self.output)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
        return self

    def stop(self) -> Path | None:
        """Stop sampling by the profiler's PID; the collapsed-stack file if written."""
        if self.process is None:
            return None
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None
        return self.output if self.output.exists() else None


def _samples(collapsed: Path) -> list[tuple[list[str], int]]:
    """(frames, count) per line of py-spy's collapsed-stack output."""
    samples = []
    for line in collapsed.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if count_text.isdigit():
            samples.append((stack.split(";"), int(count_text)))
    return samples


def _ranked(counts: dict[str, int], total: int, limit: int) -> list[tuple[str, float]]:
    ranked = sorted(counts.items(), key=lambda kv: -kv[1])
    return [(frame, round(n / total, 3)) for frame, n in ranked[:limit]] if total else []


def top_frames(collapsed: Path, limit: int = 15) -> list[tuple[str, float]]:
    """The functions with the most samples anywhere on the stack (share of all samples)."""
    samples = _samples(collapsed)
    inclusive: dict[str, int] = {}
    for frames, count in samples:
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + count
    return _ranked(inclusive, sum(c for _, c in samples), limit)


def self_frames(collapsed: Path, limit: int = 15) -> list[tuple[str, float]]:
    """The functions with the most samples at the top of the stack (share of all samples)."""
    samples = _samples(collapsed)
    own: dict[str, int] = {}
    for frames, count in samples:
        own[frames[-1]] = own.get(frames[-1], 0) + count
    return _ranked(own, sum(c for _, c in samples), limit)


def proc_status(pid: int) -> dict[str, int]:
    """The ``kB`` fields of ``/proc/PID/status`` (VmRSS, VmHWM, ...) in kB; empty if gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    found: dict[str, int] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if rest.endswith(" kB"):
            found[name] = int(rest.split()[0])
    return found


def cpu_seconds(pid: int, *, children: bool = False) -> float:
    """User plus system CPU seconds used so far by ``pid`` (all its threads); 0 if gone.

    ``children`` adds those of its children it has waited for.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11 : 15 if children else 13]) / CLOCK_TICKS


@dataclass
class RssSampler:
    """Samples VmRSS of a process every ``interval_s`` in a thread of its own."""

    pid_of: Callable[[], int | None]
    interval_s: float = 0.05
    max_samples: int = 20_000
    samples: list[tuple[float, int]] = field(default_factory=list)
    last_hwm_kb: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> RssSampler:
        """Begin sampling (the process may not exist yet: samples start when it does)."""
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set() and len(self.samples) < self.max_samples:
            pid = self.pid_of()
            if pid is not None:
                status = proc_status(pid)
                if "VmRSS" in status:
                    self.samples.append((time.perf_counter(), status["VmRSS"]))
                    self.last_hwm_kb = status.get("VmHWM", self.last_hwm_kb)
            self._stop.wait(self.interval_s)

    def stop(self) -> list[tuple[float, int]]:
        """Stop sampling; the (perf_counter, VmRSS kB) samples."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        return self.samples

    def kb(self) -> list[int]:
        """The VmRSS values sampled, kB."""
        return [kb for _, kb in self.samples]


def mosquitto_version() -> str:
    """``mosquitto version X.Y.Z``, as the binary says it."""
    try:
        out = subprocess.run(
            [mosquitto_binary(), "-h"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    match = re.search(r"mosquitto version (\S+)", out.stdout + out.stderr)
    return match.group(1) if match else "unknown"


def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args],
            capture_output=True, text=True, timeout=5, check=False,
            cwd=Path(__file__).resolve().parent.parent,
        ).stdout.strip()  # fmt: skip
    except OSError:
        return ""


def machine_info() -> dict[str, object]:
    """What the figures were measured on."""
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kb = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])

    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "not installed"

    return {
        "nproc": os.cpu_count(),
        "affinity_cpus": len(os.sched_getaffinity(0)),
        "cpu_model": cpu,
        "mem_total_mb": round(mem_kb / 1024),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "python_impl": platform.python_implementation(),
        "mosquitto": mosquitto_version(),
        "paho_mqtt": version("paho-mqtt"),
        "aiomqtt": version("aiomqtt"),
        "pydantic": version("pydantic"),
        "git_commit": _git("rev-parse", "--short", "HEAD"),
        "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "loadavg_at_start": os.getloadavg(),
    }
