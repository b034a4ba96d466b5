"""The deploy path: `lianfang init` then `lianfang install-service`, and the daemon run as its user.

CI runs as root without systemd as PID 1, so the service is started the way the
installed unit says (its Environment=, ExecStartPre= and ExecStart= lines, as
User=lianfang with SupplementaryGroups=dialout) by the test instead of systemd.
"""

from __future__ import annotations

import asyncio
import grp
import os
import pwd
import shlex
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from lab.broker import Mosquitto, free_port, terminate
from tests.clients import running, wait_until
from tests.harness import READY_S, REPO, SURVEY

USER = "lianfang"
KEY = "000102030405060708090a0b0c0d0e0f"
SYSTEM_PYTHON = Path("/usr/bin/python3")
IS_ROOT = os.geteuid() == 0


def _runtime_distributions() -> list[metadata.Distribution]:
    """The installed distributions `lianfang` needs at run time (its requirements' closure)."""
    found: dict[str, metadata.Distribution] = {}
    todo = list(metadata.requires("lianfang") or [])
    while todo:
        req = Requirement(todo.pop())
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        name = canonicalize_name(req.name)
        if name not in found:
            found[name] = metadata.distribution(name)
            todo += found[name].requires or []
    return list(found.values())


def _copy_runtime(site: Path) -> None:
    """Copy this checkout's packages and their runtime dependencies into ``site``."""
    for dist in _runtime_distributions():
        for file in dist.files or []:
            source = Path(str(dist.locate_file(file)))
            if source.is_file() and ".." not in file.parts:
                (site / file).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, site / file)
    for package in (
        "gateway",
        "drivers",
        "rules",
        "protocols",
        "receiver",
        "lab",
        "firmware_stubs",
    ):
        shutil.copytree(
            REPO / package, site / package, ignore=shutil.ignore_patterns("__pycache__")
        )


@pytest.fixture(scope="module")
def service_venv() -> Iterator[Path]:
    """A venv of the system's Python that sees this checkout: the stand-in for /opt/lianfang.

    The test venv's Python may live where the service user cannot go (pyenv
    under /root), so the service gets a venv of Debian's Python, as the README's
    /opt/lianfang is, with the same packages and a `lianfang` script as pip writes it.
    """
    version = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import sys; print(sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert version == str(sys.version_info[:2]), (
        f"{SYSTEM_PYTHON} is {version}, the tests {sys.version_info[:2]}"
    )
    folder = Path(tempfile.mkdtemp(prefix="lianfang-venv-"))
    try:
        folder.chmod(0o755)
        venv = folder / "lianfang"
        subprocess.run([SYSTEM_PYTHON, "-m", "venv", "--without-pip", venv], check=True)
        site = Path(
            subprocess.run(
                [
                    venv / "bin" / "python",
                    "-c",
                    "import sysconfig; print(sysconfig.get_path('purelib'))",
                ],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
        )
        # Copies, not a path to this checkout: the checkout may sit where the service
        # user cannot go (a clone in a mode-700 folder), as /opt/lianfang never does.
        _copy_runtime(site)
        script = venv / "bin" / "lianfang"
        script.write_text(
            f"#!{venv}/bin/python\nimport sys\nfrom gateway.cli.main import main\nsys.exit(main())\n"
        )
        script.chmod(0o755)
        yield venv
    finally:
        shutil.rmtree(folder)


@pytest.fixture
def root_dir() -> Iterator[Path]:
    """A folder standing for `/`, that the service user may enter (pytest's tmp_path is 700)."""
    folder = Path(tempfile.mkdtemp(prefix="lianfang-root-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder)


def lianfang(venv: Path, *args: object, **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run the venv's `lianfang` with ``args``; the result, output captured."""
    return subprocess.run(
        [venv / "bin" / "lianfang", *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
        **kwargs,  # type: ignore[call-overload]
    )


def init(venv: Path, root: Path, block_url: str, police_url: str) -> Path:
    """`lianfang init` with a DC-09 key into root/etc/lianfang, as the README has it; the file."""
    folder = root / "etc" / "lianfang"
    folder.mkdir(parents=True)
    done = lianfang(
        venv,
        "init",
        "--survey", SURVEY,
        "--gateway", "GW-001",
        "--broker", block_url,
        "--police", police_url,
        "--dc09", f"tcp://127.0.0.1:{free_port()}",
        "--dc09-account", "1234",
        "--dc09-key", KEY,
        "--timezone", "Asia/Shanghai",
        "--dir", folder,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return folder / "lianfang.yaml"


def unit_lines(unit: Path, key: str) -> list[str]:
    """The values of ``key=`` in the unit's [Service] section."""
    return [
        line.split("=", 1)[1]
        for line in unit.read_text().splitlines()
        if line.startswith(f"{key}=")
    ]


def test_dry_run_changes_nothing_and_lists_every_step(service_venv, root_dir):
    """--dry-run (allowed to any user) says what it would do and leaves every file as it was."""
    config = init(service_venv, root_dir, "mqtt://127.0.0.1:1883", "mqtt://127.0.0.1:1884")
    before = config.read_bytes()
    done = lianfang(service_venv, "install-service", "--root", root_dir, "--dry-run")
    assert done.returncode == 0, done.stderr
    assert f"would set state_dir: {root_dir}/var/lib/lianfang in {config}" in done.stdout
    assert f"would chmod 640 {config}" in done.stdout
    assert f"would write {root_dir}/etc/systemd/system/lianfang.service" in done.stdout
    assert "systemctl enable --now lianfang" in done.stdout
    assert config.read_bytes() == before
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert not (root_dir / "etc" / "systemd").exists()
    assert not (root_dir / "var").exists()


def test_refusals_are_one_line(service_venv, root_dir):
    """A config outside a folder of its own, a journal left behind, or a state_dir the unit cannot write: one line."""
    config = init(service_venv, root_dir, "mqtt://127.0.0.1:1883", "mqtt://127.0.0.1:1884")
    loose = root_dir / "etc" / "lianfang.yaml"
    shutil.copy(config, loose)
    done = lianfang(service_venv, "install-service", "--config", loose, "--dry-run")
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1
    assert "must be in a folder of its own" in done.stderr
    left = config.parent / "state"
    left.mkdir()
    (left / "journal.sqlite3").touch()
    done = lianfang(service_venv, "install-service", "--root", root_dir, "--dry-run")
    assert done.returncode == 1
    assert done.stderr == (
        f"install-service: {left} holds the journal of an earlier run; stop that gateway and"
        f" move the folder's files to {root_dir}/var/lib/lianfang, or they are left behind\n"
    )
    data = yaml.safe_load(config.read_text())
    config.write_text(yaml.safe_dump({**data, "state_dir": "/srv/journal"}, sort_keys=False))
    done = lianfang(service_venv, "install-service", "--root", root_dir, "--dry-run")
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1
    assert "state_dir is /srv/journal, but the service can write only" in done.stderr


@pytest.mark.skipif(not IS_ROOT, reason="switching to an unprivileged user needs root (CI is root)")
def test_refused_without_root(service_venv, root_dir):
    """Run by an ordinary user without --dry-run or --root, it refuses in one line, no traceback."""
    done = lianfang(service_venv, "install-service", user="nobody", group="nogroup", cwd="/")
    assert done.returncode == 1
    assert (
        done.stderr
        == "install-service: install-service must run as root (sudo); --dry-run shows the plan\n"
    )


@pytest.mark.skipif(not IS_ROOT, reason="the service user and file owners need root (CI is root)")
def test_installed_service_runs_as_its_user_and_forwards_a_panic(
    service_venv, root_dir, block_broker: Mosquitto, police_broker: Mosquitto, tmp_path
):
    """After init and install-service, the unit's commands run as lianfang: ready, and a panic reaches the police."""
    config = init(service_venv, root_dir, block_broker.url, police_broker.url)
    done = lianfang(service_venv, "install-service", "--root", root_dir)
    assert done.returncode == 0, done.stderr
    user, group = pwd.getpwnam(USER), grp.getgrnam(USER)
    assert user.pw_gid == group.gr_gid
    folder, state = config.parent, root_dir / "var" / "lib" / "lianfang"
    for path, mode, owner in (
        (folder, 0o750, (0, group.gr_gid)),
        (config, 0o640, (0, group.gr_gid)),
        (state, 0o750, (user.pw_uid, group.gr_gid)),
    ):
        info = path.stat()
        assert (stat.S_IMODE(info.st_mode), (info.st_uid, info.st_gid)) == (mode, owner), path
    assert yaml.safe_load(config.read_text())["state_dir"] == str(state)
    again = lianfang(service_venv, "install-service", "--root", root_dir)
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines()[:-1] == [
        f"not telling systemd: {root_dir} is not this machine's root"
    ]

    unit = root_dir / "etc" / "systemd" / "system" / "lianfang.service"
    verify = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", unit], capture_output=True, text=True, check=False
    )
    assert (verify.returncode, verify.stdout + verify.stderr) == (0, "")
    assert unit_lines(unit, "User") == unit_lines(unit, "Group") == [USER]
    assert unit_lines(unit, "SupplementaryGroups") == ["dialout"]

    env = {"PATH": "/usr/bin:/bin"} | dict(e.split("=", 1) for e in unit_lines(unit, "Environment"))
    as_service = {"user": USER, "group": USER, "extra_groups": ["dialout"], "cwd": "/"}
    [pre] = unit_lines(unit, "ExecStartPre")
    check = subprocess.run(
        shlex.split(pre), env=env, capture_output=True, text=True, check=False, **as_service
    )
    assert check.returncode == 0, check.stderr
    assert "valid: gateway GW-001" in check.stdout

    [start] = unit_lines(unit, "ExecStart")
    log = tmp_path / "service.log"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify_path = root_dir / "notify.sock"
        notify.bind(str(notify_path))
        os.chown(notify_path, user.pw_uid, group.gr_gid)
        notify.settimeout(0.2)
        with log.open("wb") as out:
            daemon = subprocess.Popen(
                shlex.split(start), env=env | {"NOTIFY_SOCKET": str(notify_path)},
                stdout=subprocess.DEVNULL, stderr=out, **as_service,
            )  # fmt: skip
        try:
            wait_ready(notify, daemon, log)
            forward_a_panic(block_broker.url, police_broker.url)
            journal = state / "journal.sqlite3"
            assert journal.stat().st_uid == user.pw_uid
        finally:
            code = terminate(daemon, timeout_s=15)
    assert code == 0, log.read_text()


def wait_ready(notify: socket.socket, daemon: subprocess.Popen[bytes], log: Path) -> None:
    """Wait for READY=1 on ``notify``, as systemd does for Type=notify."""
    deadline = time.monotonic() + READY_S
    while time.monotonic() < deadline:
        assert daemon.poll() is None, f"the service exited: {log.read_text()}"
        try:
            if "READY=1" in notify.recv(4096).decode().split("\n"):
                return
        except TimeoutError:
            continue
    raise AssertionError(f"the service was not ready in {READY_S} s: {log.read_text()}")


def forward_a_panic(block_url: str, police_url: str) -> None:
    """Press panic at S00011; the police platform must receive it."""

    async def scenario() -> None:
        async with running(block_url=block_url, police_url=police_url, shops=["S00011"]) as (
            panels,
            platform,
        ):
            assert platform is not None
            await panels["S00011"].send("panic", zone="1")

            def shops_events() -> list[tuple[str, str]]:
                # The gateway's own troubles (shop None) may come first: init's config
                # names a DC-09 receiver no one runs here, a fault the police must hear of.
                return [
                    (d.body["shop_id"], d.body["kind"])
                    for d in platform.unique
                    if d.body["shop_id"] is not None
                ]

            await wait_until(shops_events, 15, "the panic at the police")
            assert shops_events() == [("S00011", "panic")]

    asyncio.run(scenario())
