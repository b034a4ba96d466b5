"""``lianfang install-service``: run the gateway as a systemd service under its own user.

Run as root after ``lianfang init --dir /etc/lianfang``. It sets up one model
(docs/decisions.md, "The service runs as a static user"):

- a system user and group (``lianfang``), created when missing;
- the config folder and everything in it owned by root, group ``lianfang``,
  folders mode 750 and files 640: the daemon reads its config and keys but
  cannot change them, and no other user can read them;
- the journal in ``/var/lib/lianfang`` (the unit's ``StateDirectory``), owned by
  the user; a config that keeps init's relative ``state_dir`` is pointed there;
- the unit, rendered from ``gateway/data/lianfang.service`` with the ``lianfang``
  of the venv that runs this, in ``/etc/systemd/system``, then
  ``systemctl daemon-reload`` when systemd runs the machine.

Every step looks before it acts, so a second run changes nothing. Problems are
found before the first change and raised as ``InstallError``, one line each.
"""

from __future__ import annotations

import grp
import io
import os
import pwd
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from importlib import resources
from pathlib import Path
from string import Template

from ruamel.yaml import YAML

from gateway.config.file import load_config

DEFAULT_CONFIG = Path("/etc/lianfang/lianfang.yaml")
DEFAULT_UNIT_DIR = Path("/etc/systemd/system")
DEFAULT_USER = "lianfang"
STATE_DIR = Path("/var/lib/lianfang")
"""Where systemd's ``StateDirectory=lianfang`` is; the unit can write nowhere else."""
UNIT_NAME = "lianfang.service"
DIR_MODE = 0o750
FILE_MODE = 0o640
UNIT_MODE = 0o644
_USER_NAME = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
# Characters a path in the unit cannot hold unquoted: systemd would split or expand it.
_UNSAFE_IN_UNIT = frozenset(" \t\n\"'\\%$;")


class InstallError(Exception):
    """Why the service cannot be installed: one line for the installer."""


def unit_template() -> str:
    """The unit file template shipped as package data."""
    return resources.files("gateway").joinpath("data", UNIT_NAME).read_text(encoding="utf-8")


def render_unit(*, bin_dir: Path, config: Path, user: str = DEFAULT_USER) -> str:
    """The unit for the ``lianfang`` in ``bin_dir`` reading ``config``, run as ``user``."""
    for what, path in (("venv", bin_dir), ("config", config)):
        if _UNSAFE_IN_UNIT & set(str(path)):
            raise InstallError(
                f"{what} path {path} has a space or one of \"'\\%$; in it; "
                "systemd would misread it: use a plainer path"
            )
    return Template(unit_template()).substitute(bin=bin_dir, config=config, user=user)


@dataclass(frozen=True)
class Options:
    """What to install, and where."""

    config: Path = DEFAULT_CONFIG
    unit_dir: Path = DEFAULT_UNIT_DIR
    user: str = DEFAULT_USER
    root: Path | None = None
    """Treat this folder as ``/`` (tests): state and unit go under it, systemd is not told."""
    dry_run: bool = False
    bin_dir: Path = field(default_factory=lambda: Path(sys.executable).parent)
    """The venv's ``bin``: where the running interpreter, and so its ``lianfang``, is."""


def install(options: Options, echo: Callable[[str], None]) -> None:
    """Install the service as ``options`` say, telling ``echo`` each change (or planned change).

    Raises:
        InstallError: before any change, when it cannot be done as asked.
        ConfigError: when the config does not load (before any change).
        OSError: when a change fails.
    """
    is_root = os.geteuid() == 0
    if not (is_root or options.dry_run or options.root is not None):
        raise InstallError("install-service must run as root (sudo); --dry-run shows the plan")
    steps = _Steps(echo, dry_run=options.dry_run, privileged=is_root)
    if not _USER_NAME.fullmatch(options.user):
        raise InstallError(f"--user {options.user!r}: a system user name is 1-32 of a-z 0-9 _ -")
    prefix = options.root or Path("/")
    config = options.config.absolute()  # the unit names it, and systemd runs from /
    unit_dir = options.unit_dir
    if options.root is not None:
        config = _under(prefix, config)
        unit_dir = _under(prefix, unit_dir)
    state_dir = _under(prefix, STATE_DIR)
    folder = _config_folder(config)
    load_config(config)
    repoint = _must_repoint(config, state_dir)
    lianfang = options.bin_dir / "lianfang"
    if not os.access(lianfang, os.X_OK):
        raise InstallError(f"no {lianfang}: run install-service with the venv's own lianfang")
    unit = render_unit(bin_dir=options.bin_dir, config=config, user=options.user)

    _ensure_user(steps, options.user)
    if repoint:
        steps.run(
            f"set state_dir: {state_dir} in {config}", lambda: _set_state_dir(config, state_dir)
        )
    _own_config(steps, folder, options.user)
    _own_state(steps, state_dir, options.user)
    _write_unit(steps, unit_dir / UNIT_NAME, unit)
    if options.root is not None:
        echo(f"not telling systemd: {prefix} is not this machine's root")
    elif not Path("/run/systemd/system").is_dir():
        echo("systemd is not running this machine (PID 1): skipped systemctl daemon-reload")
    else:
        steps.run(
            "systemctl daemon-reload",
            lambda: _command(["systemctl", "daemon-reload"]),
            privileged=True,
        )
    echo("Next: systemctl enable --now lianfang; its log: journalctl -u lianfang -f")


class _Steps:
    """Runs changes and says each one; in a dry run, or without the rights, only says it."""

    def __init__(self, echo: Callable[[str], None], *, dry_run: bool, privileged: bool) -> None:
        self.echo = echo
        self.dry_run = dry_run
        self.privileged = privileged

    def run(self, what: str, action: Callable[[], None], *, privileged: bool = False) -> None:
        if self.dry_run:
            self.echo(f"would {what}")
        elif privileged and not self.privileged:
            self.echo(f"skipped (not root): {what}")
        else:
            action()
            self.echo(what)


def _under(root: Path, path: Path) -> Path:
    return root / path.relative_to(path.anchor) if path.is_absolute() else root / path


def _config_folder(config: Path) -> Path:
    """The folder whose owner and modes are set: it must be the gateway's own."""
    folder = config.absolute().parent
    if not folder.name.startswith("lianfang"):
        raise InstallError(
            f"{config}: the config must be in a folder of its own, such as /etc/lianfang; "
            f"install-service changes the owner and mode of everything in {folder}"
        )
    return folder


def _must_repoint(config: Path, state_dir: Path) -> bool:
    """Whether the config's ``state_dir`` is init's relative default, to be made ``state_dir``."""
    written = _yaml().load(config.read_text(encoding="utf-8")).get("state_dir")
    if written is not None and Path(str(written)) == state_dir:
        return False
    if written is not None and Path(str(written)).is_absolute():
        raise InstallError(
            f"{config}: state_dir is {written}, but the service can write only {state_dir} "
            f"(its StateDirectory); set state_dir: {state_dir}"
        )
    # A journal left by a run before the service may hold alarms not yet delivered.
    old = config.parent / str(written or "state")
    if (old / "journal.sqlite3").exists():
        raise InstallError(
            f"{old} holds the journal of an earlier run; stop that gateway and move the "
            f"folder's files to {state_dir}, or they are left behind"
        )
    return True


def _yaml() -> YAML:
    yaml = YAML()  # round-trip: the installer's comments, order and quoting stay
    yaml.preserve_quotes = True
    return yaml


def _set_state_dir(config: Path, state_dir: Path) -> None:
    """Point the config's ``state_dir`` at ``state_dir``, replacing the file atomically."""
    yaml = _yaml()
    data = yaml.load(config.read_text(encoding="utf-8"))
    data["state_dir"] = str(state_dir)
    text = io.StringIO()
    yaml.dump(data, text)
    tmp = config.with_name(f".{config.name}.install")
    # Created private: the config may hold keys, and must never be readable by others.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text.getvalue())
        out.flush()
        os.fsync(out.fileno())
    shutil.copymode(config, tmp)
    tmp.replace(config)


def _ensure_user(steps: _Steps, user: str) -> None:
    try:
        pwd.getpwnam(user)
    except KeyError:
        pass
    else:
        return
    try:
        grp.getgrnam(user)
    except KeyError:
        group = ["--user-group"]
    else:  # a group of that name already: useradd --user-group would refuse
        group = ["--gid", user]
    command = [
        "useradd",
        "--system",
        "--no-create-home",
        "--home-dir",
        "/nonexistent",
        "--shell",
        "/usr/sbin/nologin",
        *group,
        user,
    ]
    steps.run(
        f"create system user {user} ({' '.join(command)})",
        lambda: _command(command),
        privileged=True,
    )


def _command(command: list[str]) -> None:
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
    except FileNotFoundError:
        raise InstallError(f"{command[0]} not found: is this a Debian-like system?") from None
    if done.returncode != 0:
        why = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
        raise InstallError(f"{' '.join(command)} failed: {why}")


def _gid(user: str) -> int:
    """The group id of ``user`` (a dry run before the user exists gets -1: unchanged)."""
    try:
        return grp.getgrnam(user).gr_gid
    except KeyError:
        return -1


def _uid(user: str) -> int:
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        return -1


def _set(steps: _Steps, path: Path, *, uid: int, gid: int, mode: int, owner: str) -> None:
    """Give ``path`` this owner and mode, saying so only when it changes."""
    now = path.lstat()
    if stat.S_IMODE(now.st_mode) != mode:
        steps.run(f"chmod {mode:o} {path}", lambda: path.chmod(mode))
    if (now.st_uid, now.st_gid) != (uid, gid):
        steps.run(f"chown {owner} {path}", lambda: os.chown(path, uid, gid), privileged=True)


def _own_config(steps: _Steps, folder: Path, user: str) -> None:
    """root:user, folders 750 and files 640, all through the config folder; links left alone."""
    owner, gid = f"root:{user}", _gid(user)
    for top, dirs, files in os.walk(folder):
        here = Path(top)
        _set(steps, here, uid=0, gid=gid, mode=DIR_MODE, owner=owner)
        for name in files:
            path = here / name
            if path.is_symlink() or not path.is_file():
                continue
            _set(steps, path, uid=0, gid=gid, mode=FILE_MODE, owner=owner)
        dirs[:] = [d for d in dirs if not (here / d).is_symlink()]


def _own_state(steps: _Steps, state_dir: Path, user: str) -> None:
    """The state folder owned by the user, mode 750; so is a journal an earlier root run left."""
    if not state_dir.is_dir():
        steps.run(
            f"mkdir -m {DIR_MODE:o} {state_dir}",
            lambda: state_dir.mkdir(mode=DIR_MODE, parents=True),
        )
        if steps.dry_run:
            return
    owner, uid, gid = f"{user}:{user}", _uid(user), _gid(user)
    _set(steps, state_dir, uid=uid, gid=gid, mode=DIR_MODE, owner=owner)
    for path in sorted(state_dir.rglob("*")):
        now = path.lstat()
        if not path.is_symlink() and (now.st_uid, now.st_gid) != (uid, gid):
            steps.run(f"chown {owner} {path}", partial(os.chown, path, uid, gid), privileged=True)


def _write_unit(steps: _Steps, path: Path, unit: str) -> None:
    if path.is_file() and path.read_text(encoding="utf-8") == unit:
        return

    def write() -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.install")
        tmp.write_text(unit, encoding="utf-8")
        tmp.chmod(UNIT_MODE)
        tmp.replace(path)

    steps.run(f"write {path}", write)
