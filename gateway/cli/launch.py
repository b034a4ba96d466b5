"""The ``lianfang`` console script: the daemon starts without the command line's libraries.

``lianfang run`` (what systemd starts) goes straight to the gateway: typer, click,
rich and every other command's module would otherwise stay in the daemon's memory
for its whole life, unused. Every other command line, ``run`` with anything but
``--config`` among them (``run --help``), goes through the typer app.

The daemon runs no pydantic plugin, on either path (``without_pydantic_plugins``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from gateway.config.location import config_path

PLUGINS_ENV = "PYDANTIC_DISABLE_PLUGINS"
"""pydantic's switch: ``__all__`` loads none of the ``pydantic`` entry points."""


def without_pydantic_plugins() -> None:
    """Keep pydantic plugins out of the daemon; call before importing ``gateway.app``.

    The gateway uses none. One that anything else installed in the venv would be
    imported into the daemon, its hooks called on every validation on the alarm
    path, and every package's metadata read at the first validator (decision 107).
    ``gateway.app``'s import builds the events' validators, so it comes after this.
    An environment that sets the variable itself keeps its value.
    """
    os.environ.setdefault(PLUGINS_ENV, "__all__")


def main() -> None:
    """Entry point of the ``lianfang`` console script and of ``python -m gateway``."""
    match sys.argv[1:]:
        case ["run"]:
            option = None
        case ["run", "--config" | "-c", value]:
            option = Path(value)
        case ["run", value] if value.startswith("--config="):
            option = Path(value.removeprefix("--config="))
        case _:
            from gateway.cli.main import main as command_line  # noqa: PLC0415 - not for `run`

            command_line()
            return
    without_pydantic_plugins()
    from gateway.app import run_from_file  # noqa: PLC0415 - after the command line is read

    sys.exit(run_from_file(config_path(option)))
