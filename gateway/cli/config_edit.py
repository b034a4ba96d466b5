"""Edit ``lianfang.yaml`` safely: validate the new text, keep a backup, replace atomically."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import stat
from pathlib import Path

from gateway.config.file import load_config
from gateway.errors import ConfigError


def replace_checked(path: Path, text: str, *, command: str) -> None:
    """Validate ``text`` as this config file, back the old one up, and swap atomically.

    The new file keeps the old one's permissions (and owner, where allowed): the
    config may hold secrets, and a mode-600 file must not come back world-readable.
    """
    path = path.resolve()  # a symlinked config is edited where it lives, the link kept
    tmp = path.with_name(f".{path.name}.{command}")
    old = path.stat()
    try:
        # Created private, so the secrets are never readable by others, even briefly.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            with contextlib.suppress(PermissionError):  # only root may give a file away
                os.fchown(out.fileno(), old.st_uid, old.st_gid)
            os.fchmod(out.fileno(), stat.S_IMODE(old.st_mode))
            os.fsync(out.fileno())
        try:
            load_config(tmp)  # the whole file must still load, relative paths and all
        except ConfigError as exc:
            raise ConfigError(
                [
                    dataclasses.replace(p, file=f"{path} (as {command} would write it)")
                    for p in exc.problems
                ]
            ) from None
        shutil.copy2(path, path.with_name(f"{path.name}.bak"))
        tmp.replace(path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the rename reaches the disk before the command says it is done
        finally:
            os.close(dir_fd)
    finally:
        tmp.unlink(missing_ok=True)
