"""One gateway per state directory: an advisory lock held for the life of ``lianfang run``.

Two gateways on one journal would both append (``UNIQUE constraint failed``) and
take each other's broker sessions (same client ids). The second is refused at
start instead, with the PID of the first. ``fcntl.flock`` is released by the
kernel when the holder exits, even by ``kill -9``, so a stale lock file never
blocks a restart.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from typing import TYPE_CHECKING

from gateway.errors import GatewayError

if TYPE_CHECKING:
    from pathlib import Path

LOCK_FILE = "gateway.lock"


class StateDirError(GatewayError):
    """Another process holds the state directory, or it cannot be locked; the message says which."""


def lock_state_dir(state_dir: Path) -> int:
    """Lock ``state_dir`` for this process and write our PID in the lock file; the open fd.

    Keep the fd open while the gateway runs; closing it (or exiting) releases the lock.

    Raises:
        StateDirError: naming the other gateway's PID, or why the directory cannot be used.
    """
    path = state_dir / LOCK_FILE
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise StateDirError(f"cannot use state dir {state_dir}: {exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise StateDirError(
            f"another gateway (PID {holder}) is running on state dir {state_dir};"
            " stop it first, or give this config its own state_dir"
        ) from None
    except OSError as exc:  # a filesystem without flock support
        os.close(fd)
        raise StateDirError(f"cannot lock {path}: {exc.strerror or exc}") from None
    with contextlib.suppress(OSError):  # the PID is for the message only; the lock is what counts
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd
