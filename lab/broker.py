"""Run a private Mosquitto broker: for ``lianfang demo``, the tests and the benchmarks.

The broker listens on loopback only, on a free port, and is stopped by the PID
we started; nothing else on the machine is touched.

By default it runs in Mosquitto's stock configuration — a listener and nothing
else, as ``apt-get install mosquitto`` leaves it (Receive Maximum 20, 1,000
queued messages per client) — because that is the broker installers have.
``tuned=True`` adds the settings an installer may choose for speed and depth
(``TUNED_SETTINGS``); ``settings`` adds any other lines (``max_inflight_messages 1``).
"""

from __future__ import annotations

import contextlib
import getpass
import itertools
import random
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

INSTALL_HINT = (
    "Mosquitto is not installed. On Debian or Ubuntu: sudo apt-get install -y mosquitto "
    "(the package's own service may stay disabled; Lianfang starts its own broker)."
)


def terminate(process: subprocess.Popen[bytes], *, timeout_s: float) -> int | None:
    """SIGTERM ``process`` and wait; SIGKILL it if it hangs. Its exit code, or None if killed."""
    process.terminate()
    try:
        return process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return None


TUNED_SETTINGS = (
    "max_queued_messages 1000000",
    "max_queued_bytes 0",
    "max_inflight_messages 0",
    "set_tcp_nodelay true",
)
"""Deep queues, no inflight cap, no Nagle: what the benchmarks' "tuned" broker adds."""


class MosquittoMissing(RuntimeError):  # noqa: N818 - names the condition for the installer
    """No ``mosquitto`` binary on PATH."""


@dataclass(frozen=True)
class BrokerTls:
    """A TLS listener: server certificate, and the CA that client certificates must chain to."""

    ca_file: Path
    cert_file: Path
    key_file: Path
    require_client_cert: bool = True


LISTEN_PORTS = range(20000, 32768)
"""Where ``free_port`` looks: below Linux's ephemeral range (32768-60999 by default).

A port the kernel handed out (``bind(0)``) is one it hands out again to the
next outgoing connection, so a broker started a moment later on it could find
it taken ("Address already in use"), as it did under four test workers."""


REPICKS = 3
TCP_LISTEN = "0A"  # the state column of /proc/net/tcp


class PortTakenError(RuntimeError):
    """Mosquitto found its port taken at start."""


def free_port(host: str = "127.0.0.1", kind: int = socket.SOCK_STREAM) -> int:
    """A port (TCP, or UDP with ``SOCK_DGRAM``) that was free a moment ago on ``host``.

    Outside the ephemeral range (``LISTEN_PORTS``).
    """
    for port in random.sample(LISTEN_PORTS, 200):
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port on {host} in {LISTEN_PORTS}")


def _listens(pid: int, port: int) -> bool:
    """Whether process ``pid`` holds a TCP socket listening on ``port`` (Linux ``/proc``)."""
    listening = set()
    for table in (Path("/proc/net/tcp"), Path("/proc/net/tcp6")):
        with contextlib.suppress(OSError), table.open() as rows:
            for row in itertools.islice(rows, 1, None):
                fields = row.split()
                if fields[3] == TCP_LISTEN and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    listening.add(f"socket:[{fields[9]}]")
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                if str(fd.readlink()) in listening:
                    return True
    return False


def mosquitto_binary() -> str:
    """Path of ``mosquitto``; raise ``MosquittoMissing`` with install advice."""
    found = shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()),
        None,
    )
    if found is None:
        raise MosquittoMissing(INSTALL_HINT)
    return found


class Mosquitto:
    """A Mosquitto process on ``127.0.0.1:port`` that we start, stop, kill and restart."""

    def __init__(
        self,
        *,
        port: int | None = None,
        tls: BrokerTls | None = None,
        workdir: Path | None = None,
        persistent: bool = False,
        acl: str | None = None,
        tuned: bool = False,
        settings: tuple[str, ...] = (),
        include_dir: Path | None = None,
    ) -> None:
        """Prepare a broker in its stock configuration; ``start()`` runs it.

        ``persistent`` keeps sessions and queued messages across a restart;
        ``acl`` is the text of a Mosquitto ACL file; ``tuned`` adds
        ``TUNED_SETTINGS``; ``settings`` are further configuration lines.
        ``include_dir`` is a folder of generated includes (``lianfang
        broker-config``): they give the listener (on ``port``), the logins and
        the ACL, so the broker runs exactly them and opens no listener of its own.
        """
        self.host = "127.0.0.1"
        self.port = port or free_port()
        # A port we picked may be taken between the pick and mosquitto's bind (another
        # test worker's pick): the first start then picks again. A restart keeps its port.
        self._repick = port is None and include_dir is None
        self.tls = tls
        self._owns_dir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="lianfang-mosquitto-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.tuned = tuned
        self.settings = settings
        self.persistent = persistent
        self.acl = acl
        self.include_dir = include_dir
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``mqtt://`` or ``mqtts://`` URL of the listener."""
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"

    def config_text(self) -> str:
        """The broker's configuration file."""
        lines = [
            # Run as whoever started us: Mosquitto started as root would switch
            # to 'mosquitto' and could not write our private folder.
            f"user {getpass.getuser()}",
            *(
                [f"listener {self.port} {self.host}", "allow_anonymous true"]
                if self.include_dir is None
                else []
            ),
            *(
                ["persistence true", f"persistence_location {self.workdir}/", "autosave_interval 0"]
                if self.persistent
                else ["persistence false"]
            ),
            *(TUNED_SETTINGS if self.tuned else ()),
            *self.settings,
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            *([f"include_dir {self.include_dir}"] if self.include_dir is not None else []),
        ]
        if self.acl is not None:
            acl_file = self.workdir / "acl"
            acl_file.write_text(self.acl)
            lines.append(f"acl_file {acl_file}")
        if self.tls:
            lines += [
                f"cafile {self.tls.ca_file}",
                f"certfile {self.tls.cert_file}",
                f"keyfile {self.tls.key_file}",
                f"require_certificate {'true' if self.tls.require_client_cert else 'false'}",
                "tls_version tlsv1.2",
            ]
        return "\n".join(lines) + "\n"

    def start(self, timeout_s: float = 5.0) -> Self:
        """Start the broker and wait until it accepts connections.

        On its first start a broker whose port was picked for it and taken
        meanwhile picks another (``REPICKS`` times at most).
        """
        repicks = REPICKS if self._repick else 0
        self._repick = False  # a restart keeps its port: its clients come back to it
        while True:
            try:
                return self._start(timeout_s)
            except PortTakenError:
                if repicks == 0:
                    raise
                repicks -= 1
                self.port = free_port()

    def _start(self, timeout_s: float) -> Self:
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(self.config_text())
        log_path = self.workdir / "mosquitto.log"
        logged_before = log_path.stat().st_size if log_path.exists() else 0
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(  # noqa: S603 - our own binary and config
                [mosquitto_binary(), "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=log
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                with log_path.open("rb") as log:
                    log.seek(logged_before)
                    said = log.read().decode(errors="replace")
                error = PortTakenError if "Address already in use" in said else RuntimeError
                raise error(f"mosquitto exited at start on port {self.port}: {said[-500:]}")
            # Its own listening socket, not a connection: another broker on a taken
            # port would accept the connection while this one exits.
            if _listens(self.process.pid, self.port):
                return self
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"mosquitto did not listen on {self.host}:{self.port} in {timeout_s} s")

    def stop(self) -> None:
        """Stop the broker by its PID (SIGTERM, then SIGKILL)."""
        if self.process is None:
            return
        terminate(self.process, timeout_s=5)
        self.process = None

    def kill(self) -> None:
        """Kill the broker abruptly, as a power cut would."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def close(self) -> None:
        """Stop the broker and remove its working folder if we made it."""
        self.stop()
        if self._owns_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        """Start on entry."""
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop and clean up on exit."""
        self.close()
