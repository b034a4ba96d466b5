"""The ``lianfang`` console script: the daemon starts without the command line's libraries.

``lianfang run`` (what systemd starts) goes straight to the gateway: typer, click,
rich and every other command's module would otherwise stay in the daemon's memory
for its whole life, unused. Every other command line, ``run`` with anything but
``--config`` among them (``run --help``), goes through the typer app.
"""

from __future__ import annotations

import sys
from pathlib import Path

from gateway.config.location import config_path


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
    from gateway.app import run_from_file  # noqa: PLC0415 - after the command line is read

    sys.exit(run_from_file(config_path(option)))
