"""A small real file system for the disk-full fault, and a file that fills it."""

from __future__ import annotations

import contextlib
import errno
import subprocess
from collections.abc import Iterator
from pathlib import Path


class MountUnavailableError(RuntimeError):
    """This machine cannot mount a tmpfs here (no root, no CAP_SYS_ADMIN, a container)."""


@contextlib.contextmanager
def small_tmpfs(where: Path, size_mb: int) -> Iterator[Path]:
    """A tmpfs of ``size_mb`` mounted at ``where`` (created), unmounted on the way out."""
    where.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(  # noqa: S603 - fixed arguments and our own path
        ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(where)],  # noqa: S607 - the system's mount
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        raise MountUnavailableError(f"cannot mount a tmpfs: {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)  # noqa: S603, S607 - the system's umount


def fill(path: Path) -> int:
    """Write ``path`` until its file system has no byte left; the bytes written."""
    written = 0
    chunk = bytes(64 * 1024)
    with path.open("wb", buffering=0) as out:
        while chunk:
            try:
                written += out.write(chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                chunk = chunk[: len(chunk) // 2]
    return written
