"""The daemon's config, loaded in a forked child: what parsing leaves behind goes with the child."""

from __future__ import annotations

import os
import pickle
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

    from gateway.config.model import GatewayConfig


def load_config_apart(path: Path) -> GatewayConfig:
    """``load_config`` done in a forked child, the config handed back pickled.

    Parsing YAML makes hundreds of thousands of short-lived objects among the
    config's own, and the interpreter keeps that fragmented heap for good: 80 MB
    of a 4,736-shop gateway's resident memory was what was left of parsing its
    file. In a child, that memory goes when the child exits. A config that does
    not load is loaded again here, so its errors are raised as ``load_config``
    raises them. Only for a process with no threads yet (the daemon at start).

    The YAML parser and the problem finder are imported in the child only: the
    daemon that holds the config never needs them (decision 101).
    """
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:
        code = 1
        try:
            os.close(read_end)
            with os.fdopen(write_end, "wb") as out:
                pickle.dump(_load_config(path), out)
            code = 0
        finally:
            os._exit(code)  # never back into the parent's code, whatever happened
    os.close(write_end)
    with os.fdopen(read_end, "rb") as received:
        blob = received.read()
    _, status = os.waitpid(child, 0)
    if status != 0 or not blob:
        return _load_config(path)
    config: GatewayConfig = pickle.loads(blob)  # noqa: S301 - our own child's output
    return config


def _load_config(path: Path) -> GatewayConfig:
    """``load_config``, its module (the YAML parser, the problem finder) imported here."""
    from gateway.config.file import load_config  # noqa: PLC0415 - in the child, or for its error

    return load_config(path)
